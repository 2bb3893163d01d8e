// h5io.h: a small RAII layer over the HDF5 C API for checkpoints and integer model files.
//
// Everything is stored with plain HDF5 types so that h5py and h5dump read the files directly:
// float32 / float64 / int8 / uint8 / int16 / int32 / int64 datasets (little-endian; contiguous, or
// compact -- inside the object header -- up to 4 KB), scalar fixed-length UTF-8 string datasets, scalar
// attributes (string, int64, float64) and 1-D array attributes (float32 and the integer types). Files
// are written in the HDF5 1.8 file format, with per-object settings that keep small objects small (see
// "creation settings" in h5io.cpp).
//
// Strings, datasets and attributes alike, are fixed-length (the value and a terminating NUL, at most
// 1 MiB) and are read only in that form: variable-length strings, which qatlab files held before,
// are refused with a message saying the file must be made again. HDF5 reads them from the file's
// global heap in ways a hostile file turns into overflows and endless loops (h5io.cpp, "strings").
//
// Objects are addressed by '/'-separated paths relative to the root ("model/params/features.0.weight";
// a leading '/' is optional, "/" alone is the root). Names may contain dots; empty components ("a//b")
// and "." are rejected. Writing a dataset creates its missing parent groups; writing over an existing
// dataset is an error (checkpoints are always written into a fresh file, see atomic_file.h).
//
// Every failure throws std::runtime_error with one line "<file>: <object path>: <what went wrong>",
// e.g. "ckpt.h5: model/fc.weight: stored as int8, expected float32". Creating or opening a file switches
// HDF5's automatic error printing off (H5Eset_auto), so nothing is printed to stderr.
//
// The HDF5 library built by Debian is not thread-safe: use H5File from one thread at a time.
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace qatlab {

// The integer element types a dataset can hold. Each is stored as the HDF5 integer type of the same
// size and signedness, and read back only into that same type.
template <typename T>
concept H5Integer = std::same_as<T, int8_t> || std::same_as<T, uint8_t> || std::same_as<T, int16_t> ||
                    std::same_as<T, int32_t> || std::same_as<T, int64_t>;

class H5File {
 public:
  // Creates (truncating) a file for writing, with kSealBytes reserved in front for the header that
  // close() writes (file_seal.h). The directory must exist.
  static H5File create(const std::string& path);
  // Opens an existing file read-only, after checking its header and checksum (verify_sealed_file: a
  // file from before the header is opened unverified). Throws "<path>: no such file",
  // "<path>: not an HDF5 file (or truncated)", "<path>: damaged: ..." and the like.
  static H5File open_read(const std::string& path);
  // Whether `path` opens (as open_read) and its "/" names `format` in its "format" attribute; false for
  // anything else: missing, damaged, not HDF5, another format. What a command asks to tell files apart.
  static bool is_of_format(const std::string& path, const std::string& format);

  H5File() = default;  // no file; every call but close() throws
  ~H5File();           // closes (and seals) quietly; call close() to see errors when writing
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  // Flushes and closes the file (a no-op if already closed). Throws if the flush fails. A file made by
  // create() then gets its header: format tag and SHA-256 of its content (file_seal.h).
  void close();
  bool is_open() const { return file_ >= 0; }
  const std::string& path() const { return path_; }

  // ------------------------------------------------------------------------------- float datasets
  // shape may be {} (a 0-d scalar dataset holding one value) or contain zeros (an empty dataset);
  // data holds shape_numel(shape) values, row-major.
  void write_floats(const std::string& path, const Shape& shape, const float* data);
  void write_floats(const std::string& path, const Shape& shape, const std::vector<float>& data);
  void write_tensor(const std::string& path, const Tensor& t);
  Tensor read_tensor(const std::string& path) const;  // float32 datasets only
  std::vector<float> read_floats(const std::string& path, Shape* shape = nullptr) const;

  void write_doubles(const std::string& path, const Shape& shape, const double* data);
  void write_doubles(const std::string& path, const Shape& shape, const std::vector<double>& data);
  std::vector<double> read_doubles(const std::string& path, Shape* shape = nullptr) const;  // float64 only

  // ----------------------------------------------------------------------------- integer datasets
  template <H5Integer T>
  void write_ints(const std::string& path, const Shape& shape, const T* data);
  template <H5Integer T>
  void write_ints(const std::string& path, const Shape& shape, const std::vector<T>& data);
  // Throws unless the dataset is an integer dataset of exactly T's size and signedness.
  template <H5Integer T>
  std::vector<T> read_ints(const std::string& path, Shape* shape = nullptr) const;

  // Creates an (empty) group and its missing parents, e.g. to hold attributes only. Throws if the path
  // exists. Writing a dataset creates its parents without this.
  void create_group(const std::string& path);

  // The shape of any dataset ({} for a 0-d one).
  Shape dataset_shape(const std::string& path) const;

  // --------------------------------------------------------------------------------------- strings
  // A scalar fixed-length UTF-8 string dataset (h5py: f[path][()] gives bytes, .decode() a str).
  // read_string accepts any fixed-length string dataset (NUL- or space-padded, as h5py writes them).
  void write_string(const std::string& path, const std::string& value);
  std::string read_string(const std::string& path) const;

  // ------------------------------------------------------------------------------------ attributes
  // On any existing group or dataset ("/" is the root). Setting an existing attribute replaces it.
  void set_attr(const std::string& obj, const std::string& name, const std::string& value);
  void set_attr(const std::string& obj, const std::string& name, const char* value) {
    set_attr(obj, name, std::string(value));
  }
  void set_attr(const std::string& obj, const std::string& name, int64_t value);
  void set_attr(const std::string& obj, const std::string& name, double value);
  // Any other integer type (int, uint32_t, ...) is stored as int64; without this, set_attr(o, n, 3)
  // would be ambiguous between the int64_t and double overloads.
  template <std::integral I>
  void set_attr(const std::string& obj, const std::string& name, I value) {
    set_attr(obj, name, static_cast<int64_t>(value));
  }
  // The same as set_attr with a string: the name the integer model writer uses. Every string
  // attribute is a fixed-length UTF-8 string (NUL-terminated) stored inline in the object header;
  // h5py reads it as bytes (attrs[name].decode() gives the str).
  void set_attr_fixed(const std::string& obj, const std::string& name, const std::string& value) {
    set_attr(obj, name, value);
  }
  // Numeric attributes of any shape ({} a scalar, {n} an array; zeros allowed), float32 or exactly T:
  // for small per-channel arrays that do not deserve a dataset (each dataset costs an object header
  // and a link, ~120 bytes; an attribute ~35 bytes plus its name and data). h5py gives a NumPy array
  // (a NumPy scalar for shape {}). values holds shape_numel(shape) elements.
  void set_attr_floats(const std::string& obj, const std::string& name, const Shape& shape,
                       const std::vector<float>& values);
  template <H5Integer T>
  void set_attr_ints(const std::string& obj, const std::string& name, const Shape& shape,
                     const std::vector<T>& values);
  // All values of a float32 (resp. exactly-T integer) attribute of any shape, row-major.
  std::vector<float> get_attr_floats(const std::string& obj, const std::string& name) const;
  template <H5Integer T>
  std::vector<T> get_attr_ints(const std::string& obj, const std::string& name) const;

  bool has_attr(const std::string& obj, const std::string& name) const;
  // Whether "/" has a "format" attribute equal to `format` (qatlab's files name their kind there).
  bool has_format(const std::string& format) const;
  std::string get_attr_string(const std::string& obj, const std::string& name) const;
  int64_t get_attr_int(const std::string& obj, const std::string& name) const;     // any integer type
  double get_attr_double(const std::string& obj, const std::string& name) const;   // any float type

  // ---------------------------------------------------------------------------------- navigation
  // False (no error) when any component of the path is missing or a parent is not a group.
  bool exists(const std::string& path) const;
  bool is_group(const std::string& path) const;  // false when missing
  std::vector<std::string> list(const std::string& group) const;  // child names, sorted

 private:
  H5File(int64_t file, std::string path, bool writable) : file_(file), path_(std::move(path)), writable_(writable) {}

  int64_t file_ = -1;  // the HDF5 file id (hid_t), -1 when closed
  std::string path_;
  bool writable_ = false;
};

}  // namespace qatlab
