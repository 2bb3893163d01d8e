// h5io.cpp: H5File on top of the HDF5 C API: every id held by an RAII handle, every failure turned
// into one line "<file>: <object path>: <what went wrong>".
#include "core/h5io.h"

#include "core/file_seal.h"

#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

namespace qatlab {

static_assert(std::is_same_v<hid_t, int64_t>, "h5io.h stores the file id as int64_t (hid_t since HDF5 1.10)");

namespace {

// ------------------------------------------------------------------------------------------ handles

// Owns one HDF5 id and releases it with the matching close function (H5Oclose, H5Sclose, ...).
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

Handle object(hid_t id) { return Handle(id, H5Oclose); }  // groups and datasets alike
Handle space(hid_t id) { return Handle(id, H5Sclose); }
Handle type(hid_t id) { return Handle(id, H5Tclose); }
Handle attribute(hid_t id) { return Handle(id, H5Aclose); }
Handle plist(hid_t id) { return Handle(id, H5Pclose); }

// ------------------------------------------------------------------------------- creation settings
//
// Model files hold many small objects and attributes (a LeNet-5 integer model: 35-65 KB of parameters
// in ~200 of them), and HDF5's per-object defaults are sized for large data: with them the structure
// of such a file cost more than the parameters of a 4-bit model. Every setting below is a standard one
// that HDF5 1.8 readers understand (create() also caps the format at 1.8, so a setting that needed a
// newer format would fail loudly).

// Groups of up to this many links keep them in their object header ("compact" link storage) instead of
// a fractal heap and a B-tree (~1.3 KB per group); the HDF5 default switches at 8 links, which a
// model's list of ops passes. Large checkpoint groups still go dense.
constexpr unsigned kMaxCompactLinks = 256;
// Objects with up to this many attributes keep them in their object header (HDF5's default is 8; a conv
// op of an integer model has ~30, an lstm op ~40) rather than in a fractal heap and a B-tree (~1.3 KB
// per object).
constexpr unsigned kMaxCompactAttributes = 64;
// Datasets of at most this many bytes store their data inside their object header (compact layout):
// no separate block, address or size to store, and one read brings header and data.
constexpr size_t kMaxCompactDataBytes = 4096;

// Settings for groups (the root group's come from the file creation list, which takes them too).
void set_group_defaults(hid_t gcpl) {
  // No access/modification times in every header: 20 bytes less per object, and saving the same model
  // twice gives byte-identical files.
  H5Pset_obj_track_times(gcpl, false);
  // The dense thresholds must stay below the compact ones (HDF5 converts back at min_dense).
  H5Pset_attr_phase_change(gcpl, kMaxCompactAttributes, kMaxCompactAttributes * 3 / 4);
  H5Pset_link_phase_change(gcpl, kMaxCompactLinks, kMaxCompactLinks * 3 / 4);
}

Handle group_create_plist() {
  Handle gcpl = plist(H5Pcreate(H5P_GROUP_CREATE));
  set_group_defaults(gcpl.get());
  return gcpl;
}

Handle dataset_create_plist(size_t data_bytes) {
  Handle dcpl = plist(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(dcpl.get(), false);
  if (data_bytes <= kMaxCompactDataBytes) H5Pset_layout(dcpl.get(), H5D_COMPACT);
#if H5_VERSION_GE(1, 10, 5)
  // Size the object header for exactly its messages: by default every dataset header reserves room for
  // attributes (~180 bytes of a 256-byte minimum), and our datasets rarely get any. Adding one later
  // still works (HDF5 chains a continuation block).
  H5Pset_dset_no_attrs_hint(dcpl.get(), true);
#endif
  return dcpl;
}

// -------------------------------------------------------------------------------------------- errors

// Automatic printing is switched off because we report every failure ourselves; the setting belongs
// to the HDF5 library (it is not ours to scope), and nothing in qatlab wants it on.
void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// The description HDF5 left at the innermost level of its error stack (where the error was first
// detected), which is usually the most specific one; empty if the stack is empty.
std::string hdf5_reason() {
  std::string reason;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        if (e->desc && *e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &reason);
  H5Eclear2(H5E_DEFAULT);
  std::replace(reason.begin(), reason.end(), '\n', ' ');  // keep the message on one line
  return reason;
}

std::string with_reason(const std::string& what) {
  const std::string r = hdf5_reason();
  return r.empty() ? what : what + " (HDF5: " + r + ")";
}

[[noreturn]] void fail_file(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}
[[noreturn]] void fail(const std::string& file, const std::string& obj, const std::string& what) {
  throw std::runtime_error(file + ": " + obj + ": " + what);
}

// Every member starts with this, so a closed (or moved-from) or read-only file gives a clear message.
void require(bool open, bool writable, bool want_write, const std::string& file, const std::string& path) {
  if (!open) fail(file.empty() ? std::string("H5File") : file, path, "file is not open");
  if (want_write && !writable) fail(file, path, "file is open read-only");
}

// ---------------------------------------------------------------------------------------------- paths

// "a/b/c" or "/a/b/c" -> {"a", "b", "c"}; "" and "/" -> {} (the root).
std::vector<std::string> split_path(const std::string& file, const std::string& path) {
  std::vector<std::string> parts;
  if (path.empty() || path == "/") return parts;
  size_t start = path[0] == '/' ? 1 : 0;
  while (true) {
    const size_t slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == ".") fail(file, path, "bad object path (empty or '.' component)");
    parts.push_back(std::move(part));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return parts;
}

std::string join_path(const std::vector<std::string>& parts, size_t count) {
  std::string s;
  for (size_t i = 0; i < count; ++i) s += (i ? "/" : "") + parts[i];
  return s.empty() ? "/" : s;
}

// How far a path resolves from the root.
struct Walk {
  Handle obj;               // the object reached: the whole path's object when depth == parts.size()
  size_t depth = 0;         // number of components resolved
  bool not_group = false;   // the walk stopped because obj is not a group (so it has no children)
};

// Follows the path one link at a time, so that a missing parent or a dataset used as a parent ends
// the walk quietly instead of raising an HDF5 error.
Walk walk(hid_t file, const std::string& file_name, const std::string& path,
          const std::vector<std::string>& parts) {
  Walk w;
  w.obj = object(H5Oopen(file, "/", H5P_DEFAULT));
  if (!w.obj.valid()) fail(file_name, path, with_reason("cannot open the root group"));
  for (; w.depth < parts.size(); ++w.depth) {
    if (H5Iget_type(w.obj.get()) != H5I_GROUP) {
      w.not_group = true;
      return w;
    }
    const char* name = parts[w.depth].c_str();
    if (H5Lexists(w.obj.get(), name, H5P_DEFAULT) <= 0) return w;
    Handle next = object(H5Oopen(w.obj.get(), name, H5P_DEFAULT));
    if (!next.valid()) {  // a dangling soft or external link
      H5Eclear2(H5E_DEFAULT);
      return w;
    }
    w.obj = std::move(next);
  }
  return w;
}

// The object at path, which must exist.
Handle open_existing(hid_t file, const std::string& file_name, const std::string& path) {
  const std::vector<std::string> parts = split_path(file_name, path);
  Walk w = walk(file, file_name, path, parts);
  if (w.depth != parts.size()) fail(file_name, path, "not found");
  return std::move(w.obj);
}

// The group that will hold a new object at path, creating missing groups on the way.
Handle parent_for_write(hid_t file, const std::string& file_name, const std::string& path,
                        const std::vector<std::string>& parts) {
  if (parts.empty()) fail(file_name, path, "the root group cannot be written as a dataset");
  Walk w = walk(file, file_name, path, parts);
  if (w.depth == parts.size()) fail(file_name, path, "already exists");
  if (w.not_group) fail(file_name, path, "'" + join_path(parts, w.depth) + "' is a dataset, not a group");
  Handle group = std::move(w.obj);
  Handle gcpl;
  if (w.depth + 1 < parts.size()) gcpl = group_create_plist();
  for (size_t i = w.depth; i + 1 < parts.size(); ++i) {
    Handle g = object(H5Gcreate2(group.get(), parts[i].c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT));
    if (!g.valid()) fail(file_name, path, with_reason("cannot create group '" + join_path(parts, i + 1) + "'"));
    group = std::move(g);
  }
  return group;
}

// ----------------------------------------------------------------------------------- element types

enum class Elem { kFloat32, kFloat64, kInt8, kUInt8, kInt16, kInt32, kInt64 };

template <typename T>
constexpr Elem elem_of() {
  if constexpr (std::is_same_v<T, float>) return Elem::kFloat32;
  else if constexpr (std::is_same_v<T, double>) return Elem::kFloat64;
  else if constexpr (std::is_same_v<T, int8_t>) return Elem::kInt8;
  else if constexpr (std::is_same_v<T, uint8_t>) return Elem::kUInt8;
  else if constexpr (std::is_same_v<T, int16_t>) return Elem::kInt16;
  else if constexpr (std::is_same_v<T, int32_t>) return Elem::kInt32;
  else {
    static_assert(std::is_same_v<T, int64_t>, "unsupported element type");
    return Elem::kInt64;
  }
}

const char* elem_name(Elem e) {
  switch (e) {
    case Elem::kFloat32: return "float32";
    case Elem::kFloat64: return "float64";
    case Elem::kInt8: return "int8";
    case Elem::kUInt8: return "uint8";
    case Elem::kInt16: return "int16";
    case Elem::kInt32: return "int32";
    case Elem::kInt64: return "int64";
  }
  return "?";
}

// The type in memory (what our buffers hold).
hid_t mem_type(Elem e) {
  switch (e) {
    case Elem::kFloat32: return H5T_NATIVE_FLOAT;
    case Elem::kFloat64: return H5T_NATIVE_DOUBLE;
    case Elem::kInt8: return H5T_NATIVE_INT8;
    case Elem::kUInt8: return H5T_NATIVE_UINT8;
    case Elem::kInt16: return H5T_NATIVE_INT16;
    case Elem::kInt32: return H5T_NATIVE_INT32;
    case Elem::kInt64: return H5T_NATIVE_INT64;
  }
  return -1;
}

// The type on disk: fixed little-endian, so a file reads the same on any machine (h5py/NumPy's '<f4').
hid_t file_type(Elem e) {
  switch (e) {
    case Elem::kFloat32: return H5T_IEEE_F32LE;
    case Elem::kFloat64: return H5T_IEEE_F64LE;
    case Elem::kInt8: return H5T_STD_I8LE;
    case Elem::kUInt8: return H5T_STD_U8LE;
    case Elem::kInt16: return H5T_STD_I16LE;
    case Elem::kInt32: return H5T_STD_I32LE;
    case Elem::kInt64: return H5T_STD_I64LE;
  }
  return -1;
}

bool elem_is_float(Elem e) { return e == Elem::kFloat32 || e == Elem::kFloat64; }

size_t elem_size(Elem e) {
  switch (e) {
    case Elem::kFloat32: return 4;
    case Elem::kFloat64: return 8;
    case Elem::kInt8: return 1;
    case Elem::kUInt8: return 1;
    case Elem::kInt16: return 2;
    case Elem::kInt32: return 4;
    case Elem::kInt64: return 8;
  }
  return 0;
}

// A short name for a stored HDF5 type: "float32", "uint8", "string", ...
std::string type_name(hid_t t) {
  const size_t bits = H5Tget_size(t) * 8;
  switch (H5Tget_class(t)) {
    case H5T_INTEGER: return (H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_FLOAT: return "float" + std::to_string(bits);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length sequence";
    default: return "HDF5 type class " + std::to_string(static_cast<int>(H5Tget_class(t)));
  }
}

bool type_matches(hid_t t, Elem e) {
  const H5T_class_t cls = H5Tget_class(t);
  if (H5Tget_size(t) != elem_size(e)) return false;
  if (elem_is_float(e)) return cls == H5T_FLOAT;
  const bool is_unsigned = e == Elem::kUInt8;
  return cls == H5T_INTEGER && (H5Tget_sign(t) == H5T_SGN_NONE) == is_unsigned;
}

// ------------------------------------------------------------------------------------------- shapes

int64_t checked_numel(const std::string& file, const std::string& path, const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(file, path, "negative dimension in shape " + shape_str(shape));
    n *= d;
  }
  return n;
}

// A dataspace for shape: scalar for {}, simple otherwise (zero extents allowed).
Handle make_space(const Shape& shape) {
  if (shape.empty()) return space(H5Screate(H5S_SCALAR));
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  return space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
}

// The extent of a dataspace; a null dataspace (no data at all) has no shape.
Shape space_shape(hid_t sp, const std::string& file, const std::string& path) {
  switch (H5Sget_simple_extent_type(sp)) {
    case H5S_SCALAR: return {};
    case H5S_SIMPLE: {
      const int rank = H5Sget_simple_extent_ndims(sp);
      std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
      if (rank < 0 || H5Sget_simple_extent_dims(sp, dims.data(), nullptr) < 0)
        fail(file, path, with_reason("cannot read the shape"));
      // A damaged or hostile file can declare any extent: keep the product far from int64 overflow
      // (read_array then holds it against the file's size).
      unsigned __int128 n = 1;
      for (const hsize_t d : dims) {
        n *= d;
        if (d > (hsize_t{1} << 40) || n > (static_cast<unsigned __int128>(1) << 48)) {
          std::string text;
          for (const hsize_t e : dims) text += (text.empty() ? "" : ", ") + std::to_string(e);
          fail(file, path, "stored shape (" + text + ") is too large for any qatlab file");
        }
      }
      return Shape(dims.begin(), dims.end());
    }
    default: fail(file, path, "has no data (null dataspace)");
  }
}

// A dataset opened for reading, with its shape.
struct OpenDataset {
  Handle dset;
  Shape shape;
  int64_t numel = 0;
};

OpenDataset open_dataset(hid_t file, const std::string& file_name, const std::string& path) {
  OpenDataset d;
  d.dset = open_existing(file, file_name, path);
  if (H5Iget_type(d.dset.get()) != H5I_DATASET) fail(file_name, path, "is a group, not a dataset");
  Handle sp = space(H5Dget_space(d.dset.get()));
  d.shape = space_shape(sp.get(), file_name, path);
  d.numel = shape_numel(d.shape);
  return d;
}

void write_array(hid_t file, const std::string& file_name, const std::string& path, const Shape& shape,
                 Elem e, const void* data) {
  const std::vector<std::string> parts = split_path(file_name, path);
  const int64_t n = checked_numel(file_name, path, shape);
  if (n > 0 && data == nullptr) fail(file_name, path, "no data for shape " + shape_str(shape));
  Handle parent = parent_for_write(file, file_name, path, parts);
  Handle sp = make_space(shape);
  Handle dcpl = dataset_create_plist(static_cast<size_t>(n) * elem_size(e));
  Handle dset = object(H5Dcreate2(parent.get(), parts.back().c_str(), file_type(e), sp.get(), H5P_DEFAULT,
                                  dcpl.get(), H5P_DEFAULT));
  if (!dset.valid()) fail(file_name, path, with_reason("cannot create " + std::string(elem_name(e)) + " dataset"));
  // An empty dataset has nothing to transfer.
  if (n > 0 && H5Dwrite(dset.get(), mem_type(e), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail(file_name, path, with_reason("cannot write data"));
}

// Opens a dataset and checks that it stores exactly e (no silent float64 -> float32 or int32 -> int8).
OpenDataset open_typed(hid_t file, const std::string& file_name, const std::string& path, Elem e) {
  OpenDataset d = open_dataset(file, file_name, path);
  Handle t = type(H5Dget_type(d.dset.get()));
  if (!type_matches(t.get(), e))
    fail(file_name, path, "stored as " + type_name(t.get()) + ", expected " + elem_name(e));
  return d;
}

// Reads all of d into out, which holds d.numel elements of e.
void read_all(const OpenDataset& d, Elem e, void* out, const std::string& file_name, const std::string& path) {
  if (d.numel > 0 && H5Dread(d.dset.get(), mem_type(e), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    fail(file_name, path, with_reason("cannot read data"));
}

// Every byte of data we wrote is in the file (contiguous or compact storage): a shape that needs more
// bytes than the whole file has comes from damage, and must not size an allocation.
void check_fits_file(hid_t file, const std::string& file_name, const std::string& where, int64_t numel, Elem e) {
  hsize_t file_bytes = 0;
  if (H5Fget_filesize(file, &file_bytes) < 0) fail(file_name, where, with_reason("cannot read the file size"));
  const auto need = static_cast<unsigned __int128>(numel) * elem_size(e);
  if (need > file_bytes)
    fail(file_name, where, "stored shape needs " + std::to_string(static_cast<uint64_t>(need)) + " bytes of " +
                               elem_name(e) + ", more than the whole file (" + std::to_string(file_bytes) + " bytes)");
}

template <typename T>
std::vector<T> read_array(hid_t file, const std::string& file_name, const std::string& path, Shape* shape_out) {
  constexpr Elem e = elem_of<T>();
  const OpenDataset d = open_typed(file, file_name, path, e);
  check_fits_file(file, file_name, path, d.numel, e);
  std::vector<T> out(static_cast<size_t>(d.numel));
  read_all(d, e, out.data(), file_name, path);
  if (shape_out) *shape_out = d.shape;
  return out;
}

// --------------------------------------------------------------------------------------------- strings
//
// Every string is written fixed-length: a UTF-8 string type whose size is the value's bytes and a
// terminating NUL, the bytes kept inside the attribute or dataset itself. Variable-length strings are
// not read at all. They live in the file's global heap, and HDF5's conversion of them (H5T__conv_vlen,
// H5HG_read) trusts the lengths and addresses stored there: on a hostile file it copied gigabytes
// past a buffer and looped without end (tests/README.md, "Fuzzing", findings 2 and 3). A fixed-length
// string's size is a field of its type, checked below before anything is allocated, and its bytes
// are copied as they are.

// The longest string written or read, terminating NUL included: far above any text qatlab stores (names,
// settings, a command line), and small enough that no stored size can make the reader allocate much.
constexpr size_t kMaxStringBytes = size_t{1} << 20;

// The fixed-length type that holds value, after checking that it can be stored and read back whole.
Handle fixed_string_type(const std::string& file, const std::string& where, const std::string& value) {
  // A C string ends at its first NUL: one inside the value would silently cut it.
  if (value.find('\0') != std::string::npos) fail(file, where, "string value contains a NUL byte");
  if (value.size() + 1 > kMaxStringBytes)
    fail(file, where, "string of " + std::to_string(value.size()) + " bytes, longer than the " +
                          std::to_string(kMaxStringBytes - 1) + " bytes a qatlab file may hold");
  Handle t = type(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), value.size() + 1);  // with the terminating NUL, as C and h5py expect
  H5Tset_strpad(t.get(), H5T_STR_NULLTERM);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}

// Reads a one-element fixed-length string dataset or attribute of `file`. `stored` is its type, `sp`
// its dataspace, and read(mem_type, buffer) does the transfer.
template <typename ReadFn>
std::string read_one_string(hid_t file, hid_t stored, hid_t sp, const std::string& file_name,
                            const std::string& where, ReadFn read) {
  if (H5Tget_class(stored) != H5T_STRING)
    fail(file_name, where, "stored as " + type_name(stored) + ", expected a string");
  const htri_t variable = H5Tis_variable_str(stored);
  if (variable < 0) fail(file_name, where, with_reason("cannot read the string type"));
  if (variable > 0)
    fail(file_name, where,
         "stored as a variable-length string, which this qatlab no longer reads: the file predates the current "
         "format (fixed-length strings) and must be made again with this qatlab");
  const Shape shape = space_shape(sp, file_name, where);
  if (shape_numel(shape) != 1) fail(file_name, where, "holds " + shape_str(shape) + " strings, expected one");
  const size_t size = H5Tget_size(stored);
  if (size == 0 || size > kMaxStringBytes)
    fail(file_name, where, "stored string type of " + std::to_string(size) + " bytes, expected 1 to " +
                               std::to_string(kMaxStringBytes));
  check_fits_file(file, file_name, where, static_cast<int64_t>(size), Elem::kUInt8);
  Handle mem = type(H5Tcopy(stored));  // same size, padding and character set: the bytes as they are
  std::string value(size, '\0');
  if (read(mem.get(), static_cast<void*>(value.data())) < 0)
    fail(file_name, where, with_reason("cannot read string"));
  if (H5Tget_strpad(stored) == H5T_STR_SPACEPAD) {
    value.erase(value.find_last_not_of(' ') + 1);
  } else {
    value.resize(std::min(value.find('\0'), value.size()));
  }
  return value;
}

// --------------------------------------------------------------------------------------- attributes

std::string attr_where(const std::string& obj, const std::string& name) {
  return obj + ": attribute '" + name + "'";
}

// Writes (or replaces) an attribute of shape `shape` ({} for a scalar) holding `value`'s elements.
void write_attr(hid_t file, const std::string& file_name, const std::string& obj, const std::string& name,
                hid_t stored_type, hid_t memory_type, const void* value, const Shape& shape = {}) {
  if (name.empty()) fail(file_name, obj, "empty attribute name");
  Handle o = open_existing(file, file_name, obj);
  const htri_t exists = H5Aexists(o.get(), name.c_str());
  if (exists > 0 && H5Adelete(o.get(), name.c_str()) < 0)
    fail(file_name, attr_where(obj, name), with_reason("cannot replace"));
  Handle sp = make_space(shape);
  Handle a = attribute(H5Acreate2(o.get(), name.c_str(), stored_type, sp.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid()) fail(file_name, attr_where(obj, name), with_reason("cannot create"));
  // An empty array attribute has nothing to transfer (and its buffer may be null).
  if (shape_numel(shape) > 0 && H5Awrite(a.get(), memory_type, value) < 0)
    fail(file_name, attr_where(obj, name), with_reason("cannot write"));
}

struct OpenAttr {
  Handle attr, type, space;
};

OpenAttr open_attr(hid_t file, const std::string& file_name, const std::string& obj, const std::string& name) {
  Handle o = open_existing(file, file_name, obj);
  if (name.empty() || H5Aexists(o.get(), name.c_str()) <= 0) fail(file_name, attr_where(obj, name), "not found");
  OpenAttr a;
  a.attr = attribute(H5Aopen(o.get(), name.c_str(), H5P_DEFAULT));
  if (!a.attr.valid()) fail(file_name, attr_where(obj, name), with_reason("cannot open"));
  a.type = type(H5Aget_type(a.attr.get()));
  a.space = space(H5Aget_space(a.attr.get()));
  return a;
}

// Reads a one-element numeric attribute whose stored class is `cls`, converting it to `memory_type`
// (HDF5 converts between sizes of the same class, e.g. an int32 attribute into an int64).
void read_numeric_attr(hid_t file, const std::string& file_name, const std::string& obj, const std::string& name,
                       H5T_class_t cls, const char* expected, hid_t memory_type, void* out) {
  OpenAttr a = open_attr(file, file_name, obj, name);
  const std::string where = attr_where(obj, name);
  if (H5Tget_class(a.type.get()) != cls)
    fail(file_name, where, "stored as " + type_name(a.type.get()) + ", expected " + expected);
  const Shape shape = space_shape(a.space.get(), file_name, where);
  if (shape_numel(shape) != 1) fail(file_name, where, "holds shape " + shape_str(shape) + ", expected one value");
  if (H5Aread(a.attr.get(), memory_type, out) < 0) fail(file_name, where, with_reason("cannot read"));
}

// Every value of a numeric attribute that stores exactly T (any shape, row-major).
template <typename T>
std::vector<T> read_array_attr(hid_t file, const std::string& file_name, const std::string& obj,
                               const std::string& name) {
  constexpr Elem e = elem_of<T>();
  OpenAttr a = open_attr(file, file_name, obj, name);
  const std::string where = attr_where(obj, name);
  if (!type_matches(a.type.get(), e))
    fail(file_name, where, "stored as " + type_name(a.type.get()) + ", expected " + elem_name(e));
  const Shape shape = space_shape(a.space.get(), file_name, where);
  check_fits_file(file, file_name, where, shape_numel(shape), e);
  std::vector<T> out(static_cast<size_t>(shape_numel(shape)));
  if (!out.empty() && H5Aread(a.attr.get(), mem_type(e), out.data()) < 0)
    fail(file_name, where, with_reason("cannot read"));
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------ file lifetime

H5File H5File::create(const std::string& path) {
  silence_hdf5();
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  if (!fs::is_directory(dir, ec)) fail_file(path, "cannot create: directory '" + dir.string() + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0) fail_file(path, "cannot create: directory '" + dir.string() + "' is not writable");
  if (fs::is_directory(p, ec)) fail_file(path, "cannot create: is a directory");
  // Strong close: closing the file closes anything still open in it, so close() really ends the file.
  Handle fapl = plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  // The 1.8 file format (readable by every HDF5 since 2008, h5py included) stores groups and object
  // headers far more compactly than the 1.0 default: model files with many small datasets halve.
  // Capping it at 1.8 too means a newer library writing a newer structure fails here instead of
  // quietly making files that older readers cannot open.
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18);
  // The root group takes its link and attribute settings from the file creation list.
  Handle fcpl = plist(H5Pcreate(H5P_FILE_CREATE));
  set_group_defaults(fcpl.get());
  // Room for the tag and checksum that close() writes (file_seal.h); HDF5 never reads this block.
  H5Pset_userblock(fcpl.get(), static_cast<hsize_t>(kSealBytes));
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (f < 0) fail_file(path, with_reason("cannot create"));
  return H5File(f, path, /*writable=*/true);
}

bool H5File::is_of_format(const std::string& path, const std::string& format) {
  try {
    return open_read(path).has_format(format);
  } catch (const std::exception&) {
    return false;
  }
}

bool H5File::has_format(const std::string& format) const {
  return has_attr("/", "format") && get_attr_string("/", "format") == format;
}

H5File H5File::open_read(const std::string& path) {
  silence_hdf5();
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_file(path, "no such file");
  if (fs::is_directory(path, ec)) fail_file(path, "is a directory, not a file");
  if (::access(path.c_str(), R_OK) != 0) fail_file(path, "cannot read (permission denied)");
  // The HDF5 library crashes or loops on some damaged files: check the checksum before it parses.
  verify_sealed_file(path);
  // The signature check rejects non-HDF5 files; opening also checks the stored end-of-file address,
  // which is what catches a file cut short after its superblock.
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 <= 0) {
    H5Eclear2(H5E_DEFAULT);
    fail_file(path, "not an HDF5 file (or truncated)");
  }
  Handle fapl = plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f < 0) {
    H5Eclear2(H5E_DEFAULT);
    fail_file(path, "not an HDF5 file (or truncated)");
  }
  return H5File(f, path, /*writable=*/false);
}

H5File::~H5File() {
  if (file_ < 0) return;
  const bool ok = H5Fclose(file_) >= 0;
  H5Eclear2(H5E_DEFAULT);
  if (ok && writable_) {
    try {
      seal_file(path_);
    } catch (const std::exception&) {
      // Quietly, as documented: close() is the call that reports errors.
    }
  }
}

H5File::H5File(H5File&& other) noexcept
    : file_(std::exchange(other.file_, -1)), path_(std::move(other.path_)), writable_(other.writable_) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    if (file_ >= 0) H5Fclose(file_);
    file_ = std::exchange(other.file_, -1);
    path_ = std::move(other.path_);
    writable_ = other.writable_;
  }
  return *this;
}

void H5File::close() {
  if (file_ < 0) return;
  const hid_t f = std::exchange(file_, -1);
  if (H5Fclose(f) < 0) fail_file(path_, with_reason("cannot close (data may not be on disk)"));
  if (writable_) seal_file(path_);
}

// ------------------------------------------------------------------------------------------- floats

void H5File::write_floats(const std::string& path, const Shape& shape, const float* data) {
  require(is_open(), writable_, true, path_, path);
  write_array(file_, path_, path, shape, Elem::kFloat32, data);
}

void H5File::write_floats(const std::string& path, const Shape& shape, const std::vector<float>& data) {
  require(is_open(), writable_, true, path_, path);
  if (static_cast<int64_t>(data.size()) != checked_numel(path_, path, shape))
    fail(path_, path, std::to_string(data.size()) + " values for shape " + shape_str(shape));
  write_array(file_, path_, path, shape, Elem::kFloat32, data.data());
}

void H5File::write_tensor(const std::string& path, const Tensor& t) {
  require(is_open(), writable_, true, path_, path);
  if (!t.defined()) fail(path_, path, "cannot write an undefined tensor");
  write_array(file_, path_, path, t.shape(), Elem::kFloat32, t.data());
}

Tensor H5File::read_tensor(const std::string& path) const {
  require(is_open(), writable_, false, path_, path);
  const OpenDataset d = open_typed(file_, path_, path, Elem::kFloat32);
  check_fits_file(file_, path_, path, d.numel, Elem::kFloat32);
  Tensor t = Tensor::empty(d.shape);  // read straight into the tensor: checkpoints can be large
  read_all(d, Elem::kFloat32, t.data(), path_, path);
  return t;
}

std::vector<float> H5File::read_floats(const std::string& path, Shape* shape) const {
  require(is_open(), writable_, false, path_, path);
  return read_array<float>(file_, path_, path, shape);
}

void H5File::write_doubles(const std::string& path, const Shape& shape, const double* data) {
  require(is_open(), writable_, true, path_, path);
  write_array(file_, path_, path, shape, Elem::kFloat64, data);
}

void H5File::write_doubles(const std::string& path, const Shape& shape, const std::vector<double>& data) {
  require(is_open(), writable_, true, path_, path);
  if (static_cast<int64_t>(data.size()) != checked_numel(path_, path, shape))
    fail(path_, path, std::to_string(data.size()) + " values for shape " + shape_str(shape));
  write_array(file_, path_, path, shape, Elem::kFloat64, data.data());
}

std::vector<double> H5File::read_doubles(const std::string& path, Shape* shape) const {
  require(is_open(), writable_, false, path_, path);
  return read_array<double>(file_, path_, path, shape);
}

// ------------------------------------------------------------------------------------------ integers

template <H5Integer T>
void H5File::write_ints(const std::string& path, const Shape& shape, const T* data) {
  require(is_open(), writable_, true, path_, path);
  write_array(file_, path_, path, shape, elem_of<T>(), data);
}

template <H5Integer T>
void H5File::write_ints(const std::string& path, const Shape& shape, const std::vector<T>& data) {
  require(is_open(), writable_, true, path_, path);
  if (static_cast<int64_t>(data.size()) != checked_numel(path_, path, shape))
    fail(path_, path, std::to_string(data.size()) + " values for shape " + shape_str(shape));
  write_array(file_, path_, path, shape, elem_of<T>(), data.data());
}

template <H5Integer T>
std::vector<T> H5File::read_ints(const std::string& path, Shape* shape) const {
  require(is_open(), writable_, false, path_, path);
  return read_array<T>(file_, path_, path, shape);
}

template void H5File::write_ints<int8_t>(const std::string&, const Shape&, const int8_t*);
template void H5File::write_ints<uint8_t>(const std::string&, const Shape&, const uint8_t*);
template void H5File::write_ints<int16_t>(const std::string&, const Shape&, const int16_t*);
template void H5File::write_ints<int32_t>(const std::string&, const Shape&, const int32_t*);
template void H5File::write_ints<int64_t>(const std::string&, const Shape&, const int64_t*);
template void H5File::write_ints<int8_t>(const std::string&, const Shape&, const std::vector<int8_t>&);
template void H5File::write_ints<uint8_t>(const std::string&, const Shape&, const std::vector<uint8_t>&);
template void H5File::write_ints<int16_t>(const std::string&, const Shape&, const std::vector<int16_t>&);
template void H5File::write_ints<int32_t>(const std::string&, const Shape&, const std::vector<int32_t>&);
template void H5File::write_ints<int64_t>(const std::string&, const Shape&, const std::vector<int64_t>&);
template std::vector<int8_t> H5File::read_ints<int8_t>(const std::string&, Shape*) const;
template std::vector<uint8_t> H5File::read_ints<uint8_t>(const std::string&, Shape*) const;
template std::vector<int16_t> H5File::read_ints<int16_t>(const std::string&, Shape*) const;
template std::vector<int32_t> H5File::read_ints<int32_t>(const std::string&, Shape*) const;
template std::vector<int64_t> H5File::read_ints<int64_t>(const std::string&, Shape*) const;

void H5File::create_group(const std::string& path) {
  require(is_open(), writable_, true, path_, path);
  const std::vector<std::string> parts = split_path(path_, path);
  Handle parent = parent_for_write(file_, path_, path, parts);
  Handle gcpl = group_create_plist();
  Handle g = object(H5Gcreate2(parent.get(), parts.back().c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT));
  if (!g.valid()) fail(path_, path, with_reason("cannot create group"));
}

Shape H5File::dataset_shape(const std::string& path) const {
  require(is_open(), writable_, false, path_, path);
  return open_dataset(file_, path_, path).shape;
}

// ------------------------------------------------------------------------------------------- strings

void H5File::write_string(const std::string& path, const std::string& value) {
  require(is_open(), writable_, true, path_, path);
  Handle t = fixed_string_type(path_, path, value);
  const std::vector<std::string> parts = split_path(path_, path);
  Handle parent = parent_for_write(file_, path_, path, parts);
  Handle sp = space(H5Screate(H5S_SCALAR));
  Handle dcpl = dataset_create_plist(value.size() + 1);
  Handle dset =
      object(H5Dcreate2(parent.get(), parts.back().c_str(), t.get(), sp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  if (!dset.valid()) fail(path_, path, with_reason("cannot create string dataset"));
  if (H5Dwrite(dset.get(), t.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, value.c_str()) < 0)
    fail(path_, path, with_reason("cannot write string"));
}

std::string H5File::read_string(const std::string& path) const {
  require(is_open(), writable_, false, path_, path);
  Handle dset = open_existing(file_, path_, path);
  if (H5Iget_type(dset.get()) != H5I_DATASET) fail(path_, path, "is a group, not a dataset");
  Handle t = type(H5Dget_type(dset.get()));
  Handle sp = space(H5Dget_space(dset.get()));
  return read_one_string(file_, t.get(), sp.get(), path_, path, [&](hid_t mem, void* buf) {
    return H5Dread(dset.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  });
}

// ---------------------------------------------------------------------------------------- attributes

void H5File::set_attr(const std::string& obj, const std::string& name, const std::string& value) {
  require(is_open(), writable_, true, path_, obj);
  Handle t = fixed_string_type(path_, attr_where(obj, name), value);
  write_attr(file_, path_, obj, name, t.get(), t.get(), value.c_str());
}

void H5File::set_attr(const std::string& obj, const std::string& name, int64_t value) {
  require(is_open(), writable_, true, path_, obj);
  write_attr(file_, path_, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void H5File::set_attr(const std::string& obj, const std::string& name, double value) {
  require(is_open(), writable_, true, path_, obj);
  write_attr(file_, path_, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void H5File::set_attr_floats(const std::string& obj, const std::string& name, const Shape& shape,
                             const std::vector<float>& values) {
  require(is_open(), writable_, true, path_, obj);
  if (static_cast<int64_t>(values.size()) != checked_numel(path_, attr_where(obj, name), shape))
    fail(path_, attr_where(obj, name), std::to_string(values.size()) + " values for shape " + shape_str(shape));
  write_attr(file_, path_, obj, name, file_type(Elem::kFloat32), mem_type(Elem::kFloat32), values.data(), shape);
}

template <H5Integer T>
void H5File::set_attr_ints(const std::string& obj, const std::string& name, const Shape& shape,
                           const std::vector<T>& values) {
  require(is_open(), writable_, true, path_, obj);
  if (static_cast<int64_t>(values.size()) != checked_numel(path_, attr_where(obj, name), shape))
    fail(path_, attr_where(obj, name), std::to_string(values.size()) + " values for shape " + shape_str(shape));
  write_attr(file_, path_, obj, name, file_type(elem_of<T>()), mem_type(elem_of<T>()), values.data(), shape);
}

std::vector<float> H5File::get_attr_floats(const std::string& obj, const std::string& name) const {
  require(is_open(), writable_, false, path_, obj);
  return read_array_attr<float>(file_, path_, obj, name);
}

template <H5Integer T>
std::vector<T> H5File::get_attr_ints(const std::string& obj, const std::string& name) const {
  require(is_open(), writable_, false, path_, obj);
  return read_array_attr<T>(file_, path_, obj, name);
}

template void H5File::set_attr_ints<int8_t>(const std::string&, const std::string&, const Shape&,
                                            const std::vector<int8_t>&);
template void H5File::set_attr_ints<uint8_t>(const std::string&, const std::string&, const Shape&,
                                            const std::vector<uint8_t>&);
template void H5File::set_attr_ints<int16_t>(const std::string&, const std::string&, const Shape&,
                                            const std::vector<int16_t>&);
template void H5File::set_attr_ints<int32_t>(const std::string&, const std::string&, const Shape&,
                                            const std::vector<int32_t>&);
template void H5File::set_attr_ints<int64_t>(const std::string&, const std::string&, const Shape&,
                                            const std::vector<int64_t>&);
template std::vector<int8_t> H5File::get_attr_ints<int8_t>(const std::string&, const std::string&) const;
template std::vector<uint8_t> H5File::get_attr_ints<uint8_t>(const std::string&, const std::string&) const;
template std::vector<int16_t> H5File::get_attr_ints<int16_t>(const std::string&, const std::string&) const;
template std::vector<int32_t> H5File::get_attr_ints<int32_t>(const std::string&, const std::string&) const;
template std::vector<int64_t> H5File::get_attr_ints<int64_t>(const std::string&, const std::string&) const;

bool H5File::has_attr(const std::string& obj, const std::string& name) const {
  require(is_open(), writable_, false, path_, obj);
  Handle o = open_existing(file_, path_, obj);
  return !name.empty() && H5Aexists(o.get(), name.c_str()) > 0;
}

std::string H5File::get_attr_string(const std::string& obj, const std::string& name) const {
  require(is_open(), writable_, false, path_, obj);
  OpenAttr a = open_attr(file_, path_, obj, name);
  return read_one_string(file_, a.type.get(), a.space.get(), path_, attr_where(obj, name),
                         [&](hid_t mem, void* buf) { return H5Aread(a.attr.get(), mem, buf); });
}

int64_t H5File::get_attr_int(const std::string& obj, const std::string& name) const {
  require(is_open(), writable_, false, path_, obj);
  int64_t value = 0;
  read_numeric_attr(file_, path_, obj, name, H5T_INTEGER, "an integer", H5T_NATIVE_INT64, &value);
  return value;
}

double H5File::get_attr_double(const std::string& obj, const std::string& name) const {
  require(is_open(), writable_, false, path_, obj);
  double value = 0.0;
  read_numeric_attr(file_, path_, obj, name, H5T_FLOAT, "a float", H5T_NATIVE_DOUBLE, &value);
  return value;
}

// ---------------------------------------------------------------------------------------- navigation

bool H5File::exists(const std::string& path) const {
  require(is_open(), writable_, false, path_, path);
  const std::vector<std::string> parts = split_path(path_, path);
  return walk(file_, path_, path, parts).depth == parts.size();
}

bool H5File::is_group(const std::string& path) const {
  require(is_open(), writable_, false, path_, path);
  const std::vector<std::string> parts = split_path(path_, path);
  const Walk w = walk(file_, path_, path, parts);
  return w.depth == parts.size() && H5Iget_type(w.obj.get()) == H5I_GROUP;
}

std::vector<std::string> H5File::list(const std::string& group) const {
  require(is_open(), writable_, false, path_, group);
  Handle g = open_existing(file_, path_, group);
  if (H5Iget_type(g.get()) != H5I_GROUP) fail(path_, group, "is a dataset, not a group");
  H5G_info_t info;
  if (H5Gget_info(g.get(), &info) < 0) fail(path_, group, with_reason("cannot list"));
  std::vector<std::string> names;
  names.reserve(info.nlinks);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail(path_, group, with_reason("cannot list"));
    std::string name(static_cast<size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());  // the name index is already sorted; this makes it explicit
  return names;
}

}  // namespace qatlab
