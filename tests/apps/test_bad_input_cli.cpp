// test_bad_input_cli.cpp: end-to-end, the `qatlab` binary against damaged and hostile files, absurd
// option values and failing disks: one stderr line, exit code 1 (bad file, failed write) or 2 (bad
// option), no crash, and nothing that was on disk lost or left half-written.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/file_seal.h"
#include "core/h5io.h"
#include "nn/checkpoint.h"
#include "quant/engine/int8_graph.h"
#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

// Hostile files are written through the library itself (save_checkpoint, Int8Graph::save): their
// checksums are right, their values are not, as in a hand-crafted file.

class BadInputCli : public CliSuite {
 protected:
  // One float MLP, its QAT fine-tune and integer model, shared by every test of the process.
  static void SetUpTestSuite() {
    set_up_suite("bad_input", 256, 64, /*seed=*/11);
    const fs::path& dir = suite_dir_->path();
    float_ckpt_ = (dir / "float/checkpoint.h5").string();
    qat_ckpt_ = (dir / "qat/checkpoint.h5").string();
    int8_model_ = (dir / "qat/model.int8.h5").string();
    const Args common = {"--data-dir", data_dir_, "--threads", "2", "--progress", "none", "--test-limit", "64"};
    Args train = {"train", "--model", "mlp", "--epochs", "1", "--out", (dir / "float").string()};
    train.insert(train.end(), common.begin(), common.end());
    ASSERT_TRUE(Succeeded(run_qatlab(train, dir, "float")));
    Args qat = {"qat", "--from", float_ckpt_, "--epochs", "1", "--lr", "0.01", "--out", (dir / "qat").string()};
    qat.insert(qat.end(), common.begin(), common.end());
    ASSERT_TRUE(Succeeded(run_qatlab(qat, dir, "qat")));
    ASSERT_TRUE(Succeeded(run_qatlab({"convert", qat_ckpt_}, dir, "convert")));
  }
  static void TearDownTestSuite() { tear_down_suite(); }

  // A copy of `file` in this test's work directory.
  std::string copy_of(const std::string& file, const std::string& name) {
    const std::string to = work(name);
    fs::copy_file(file, to, fs::copy_options::overwrite_existing);
    return to;
  }
  RunResult eval(const std::string& model, const std::string& tag) {
    return qatlab({"eval", model, "--data-dir", data_dir_, "--threads", "2", "--test-limit", "64"}, tag);
  }

  static inline std::string float_ckpt_, qat_ckpt_, int8_model_;
};

// ---------------------------------------------------------------------------------- damaged files

TEST_F(BadInputCli, FlippedBitsAndChangedBytesAreRefusedBeforeHdf5ParsesTheFile) {
  for (const std::string& original : {float_ckpt_, qat_ckpt_, int8_model_}) {
    SCOPED_TRACE(original);
    // Where the qatlab version is stored: in files with variable-length strings that was the global
    // heap, where a flipped bit crashed eval and info and a changed byte hung them.
    const std::string content = read_text(original);
    size_t heap = content.find(QATLAB_VERSION);
    if (heap == std::string::npos) heap = content.size() / 2;  // an integer model does not store it
    for (const bool whole_byte : {false, true}) {
      std::string bytes = read_text(original);
      bytes[heap] = static_cast<char>(whole_byte ? 0x7f : bytes[heap] ^ 0x01);
      const std::string bad = work(whole_byte ? "byte.h5" : "bit.h5");
      write_text(bad, bytes);
      for (const char* command : {"eval", "info"}) {
        const RunResult r = std::string(command) == "eval" ? eval(bad, command) : qatlab({"info", bad}, command);
        EXPECT_TRUE(FailedWith(r, kRuntimeFailure, command, {bad, "damaged", "SHA-256"}));
      }
    }
  }
}

// ------------------------------------------------------------------------- hostile stored values

TEST_F(BadInputCli, OutOfRangeModelShapesInACheckpointNameTheFileAndTheValue) {
  struct Case {
    const char* name;
    int64_t value;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"num_classes", int64_t{1} << 62, "num_classes = 4611686018427387904, expected 2..1000"},
      {"height", 65535, "height = 65535, expected 1..256"},
      {"height", INT64_MAX, "height = 9223372036854775807"},
      {"channels", -3, "channels = -3"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    const std::string ckpt = work("hostile.h5");
    Checkpoint hostile = load_checkpoint(float_ckpt_);
    ModelSpec& spec = hostile.spec;
    (std::string(c.name) == "num_classes" ? spec.num_classes : std::string(c.name) == "height" ? spec.height
                                                                                                : spec.channels) = c.value;
    save_checkpoint(ckpt, hostile);
    EXPECT_TRUE(FailedWith(eval(ckpt, "eval"), kRuntimeFailure, "eval", {ckpt, c.expected}));
    EXPECT_TRUE(FailedWith(qatlab({"info", ckpt}, "info"), kRuntimeFailure, "info", {ckpt, c.expected}));
  }
}

// Averaged weights (--swa-start) that do not fit the file: a count past its epochs, or a mean lacking a
// parameter when the run goes on.
TEST_F(BadInputCli, DamagedAveragedWeightsNameTheFile) {
  const Checkpoint good = load_checkpoint(float_ckpt_);
  ASSERT_EQ(good.epoch, 1);
  Checkpoint hostile = good;
  hostile.swa_mean = good.model_state;
  hostile.swa_count = 5;
  const std::string counted = work("counted.h5");
  save_checkpoint(counted, hostile);
  EXPECT_TRUE(FailedWith(qatlab({"info", counted}, "info"), kRuntimeFailure, "info",
                         {counted, "training/swa: count = 5, expected 1..1"}));

  // Two epochs done, the second averaged (its settings say so), and one parameter's mean missing.
  hostile.epoch = 2;
  hostile.swa_count = 1;
  hostile.swa_mean.pop_back();
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"\nepochs = 1\n", "\nepochs = 3\n"},
                                 {"\nswa-start = 0\n", "\nswa-start = 1\n"},
                                 {"\nswa-lr = 0\n", "\nswa-lr = 0.5\n"}}) {  // 0.5: stored as written
    const size_t at = hostile.config_ini.find(from);
    ASSERT_NE(at, std::string::npos) << from << " not in\n" << hostile.config_ini;
    hostile.config_ini.replace(at, from.size(), to);
  }
  const std::string partial = work("partial.h5");
  save_checkpoint(partial, hostile);
  const RunResult r = qatlab({"train", "--resume", partial, "--data-dir", data_dir_, "--threads", "2", "--progress", "none",
                              "--out", work("partial-run")}, "resume");
  EXPECT_TRUE(FailedWith(r, kRuntimeFailure, "train", {"the averaged weights"}));
  EXPECT_FALSE(fs::exists(work("partial-run") + "/checkpoint.h5"));
}

TEST_F(BadInputCli, BadStoredSettingsBlameTheFileNotAnOption) {
  Checkpoint c = load_checkpoint(qat_ckpt_);
  const std::string config = c.config_ini;
  const size_t at = config.find("abits = 8");
  ASSERT_NE(at, std::string::npos) << config;
  const std::string ckpt = work("abits.h5");
  // The quantization settings are stored as data (/model/qconfig): a bad field is the file's fault.
  const std::string qconfig = c.qconfig;
  const size_t bits = qconfig.find("activation: {bits: 8");
  ASSERT_NE(bits, std::string::npos) << qconfig;
  c.qconfig = std::string(qconfig).replace(bits, 20, "activation: {bits: 9");
  save_checkpoint(ckpt, c);
  for (const char* command : {"eval", "convert", "info"}) {
    const RunResult r = std::string(command) == "eval" ? eval(ckpt, command) : qatlab({command, ckpt}, command);
    EXPECT_TRUE(FailedWith(r, kRuntimeFailure, command, {ckpt, "stored quantization settings", "9"}));
    EXPECT_EQ(r.err.find("--abits"), std::string::npos) << r.err;
  }
  // With them, the command line the run was made with is not consulted...
  c.qconfig = qconfig;
  c.config_ini = std::string(config).replace(at, 9, "abits = 9");
  save_checkpoint(ckpt, c);
  EXPECT_TRUE(Succeeded(qatlab({"convert", ckpt}, "convert-data")));
  // ... which a file written before they were stored still needs.
  c.qconfig.clear();
  save_checkpoint(ckpt, c);
  for (const char* command : {"eval", "convert", "info"}) {
    const RunResult r = std::string(command) == "eval" ? eval(ckpt, command) : qatlab({command, ckpt}, command);
    EXPECT_TRUE(FailedWith(r, kRuntimeFailure, command, {ckpt, "stored setting abits", "9"}));
    EXPECT_EQ(r.err.find("--abits"), std::string::npos) << r.err;
  }
  // A line Boost cannot read: not "the options configuration file", which the user never gave.
  c.config_ini = config + "this is not a setting\n";
  save_checkpoint(ckpt, c);
  const RunResult r = eval(ckpt, "line");
  EXPECT_TRUE(FailedWith(r, kRuntimeFailure, "eval", {ckpt, "stored settings contain"}));
  EXPECT_EQ(r.err.find("configuration file"), std::string::npos) << r.err;
  // Resuming from it: the stored settings are checked as the file's before they meet the command line.
  const RunResult resume = qatlab({"qat", "--resume", ckpt, "--data-dir", data_dir_, "--threads", "2", "--progress",
                                   "none", "--out", work("resumed")},
                                  "resume");
  EXPECT_TRUE(FailedWith(resume, kRuntimeFailure, "qat", {ckpt, "stored settings contain"}));
}

TEST_F(BadInputCli, ControlBytesInStoredNamesAreEscaped) {
  const std::string ckpt = work("escape.h5");
  Checkpoint c = load_checkpoint(float_ckpt_);
  c.model_name = "mlp\x1b[2J\nforged line";
  // With its description the network is rebuilt from it, and the name is only printed.
  save_checkpoint(ckpt, c);
  const RunResult printed = eval(ckpt, "eval-described");
  EXPECT_TRUE(printed.exited && printed.exit_code == 0) << printed.err;
  EXPECT_NE(printed.out.find("mlp\\x1b[2J\\x0aforged line"), std::string::npos) << printed.out;
  EXPECT_EQ(printed.out.find('\x1b'), std::string::npos);
  // Without one (a file from before descriptions) the name must be a built-in model.
  c.model_description.clear();
  save_checkpoint(ckpt, c);
  const RunResult r = eval(ckpt, "eval");
  EXPECT_TRUE(FailedWith(r, kRuntimeFailure, "eval", {"unknown model", "mlp\\x1b[2J\\x0aforged line"}));
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos);
}

TEST_F(BadInputCli, IntegerModelReadingASlotNothingWritesIsRefusedAtLoad) {
  // Today's heap overflow: the last op reads a slot no op writes, and eval reported an accuracy.
  const Int8Graph good = Int8Graph::load(int8_model_);
  Int8Graph g = good;
  g.num_slots += 1;
  g.ops.back().inputs = {g.num_slots - 1};
  const std::string model = work("unwritten.h5");
  g.save(model);
  EXPECT_TRUE(FailedWith(eval(model, "eval"), kRuntimeFailure, "eval",
                         {model, "reads slot " + std::to_string(g.num_slots - 1) + ", which no earlier op writes"}));

  size_t fc = 0;
  for (size_t i = 0; i < good.ops.size(); ++i)
    if (good.ops[i].kind == Int8OpKind::FullyConnected) fc = i;
  ASSERT_GT(fc, 0u);
  // A multiplier outside [2^30, 2^31): not the documented fixed-point arithmetic.
  g = good;
  g.ops[fc].layer.fc.output_multiplier[0] = 5;
  const std::string mult = work("multiplier.h5");
  g.save(mult);
  EXPECT_TRUE(FailedWith(eval(mult, "mult"), kRuntimeFailure, "eval", {mult, "output_multiplier[0]: multiplier 5"}));
  // A bias so large that the int32 accumulator could overflow.
  g = good;
  g.ops[fc].layer.bias[0] = INT32_MAX - 5;
  const std::string bias = work("bias.h5");
  g.save(bias);
  EXPECT_TRUE(FailedWith(eval(bias, "bias"), kRuntimeFailure, "eval", {bias, "bias[0]", "overflow"}));
  // The first layer fed 84 values where it takes 120 (a consumer whose width disagrees with its producer).
  g = good;
  for (Int8Op& op : g.ops)
    if (op.kind == Int8OpKind::FullyConnected) {
      Shape& w = op.layer.weight_shape;
      w[1] += 1;
      op.layer.weight.resize(static_cast<size_t>(w[0] * w[1]));
      break;
    }
  const std::string width = work("width.h5");
  g.save(width);
  EXPECT_TRUE(FailedWith(eval(width, "width"), kRuntimeFailure, "eval", {width, "fully_connected"}));
}

// ------------------------------------------------------------------------ strings and fuzz findings

// Checkpoints and dynamic models written before strings were fixed-length hold variable-length ones,
// which HDF5 reads from the global heap (where a crafted file overflowed a buffer or hung the reader):
// such a file is refused, saying that it must be made again.
TEST_F(BadInputCli, FilesWithVariableLengthStringsAreRefusedAsTooOld) {
  const std::string old = work("old-format.h5");
  {
    const hid_t f = H5Fcreate(old.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    const char* value = "qatlab-checkpoint";
    ASSERT_GE(H5Awrite(a, t, &value), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
  }
  for (const char* command : {"eval", "info"}) {
    const RunResult r = std::string(command) == "eval" ? eval(old, command) : qatlab({"info", old}, command);
    EXPECT_TRUE(FailedWith(r, kRuntimeFailure, command,
                           {old, "attribute 'format'", "variable-length string", "must be made again"}));
  }
}

// tests/fuzz/regressions/<harness>/ holds the inputs that crashed or hung a fuzz harness (tests/README.md,
// "Fuzzing"). Each is HDF5 content; sealed as the harness seals it, it is a crafted file with a valid
// header, and every command that reads it must refuse it in one line.
TEST_F(BadInputCli, InputsThatCrashedOrHungTheFuzzersAreRefusedInOneLine) {
  const fs::path regressions = fs::path(__FILE__).parent_path().parent_path() / "fuzz" / "regressions";
  size_t inputs = 0;
  for (const auto& harness : fs::directory_iterator(regressions)) {
    for (const auto& input : fs::directory_iterator(harness.path())) {
      const std::string name = harness.path().filename().string() + "-" + input.path().filename().string();
      SCOPED_TRACE(name);
      const std::string file = work(name + ".h5");
      write_text(file, std::string(static_cast<size_t>(kSealBytes), '\0') + read_text(input.path().string()));
      seal_file(file);
      for (const char* command : {"eval", "info"}) {
        const std::string tag = name + "-" + command;
        const RunResult r = std::string(command) == "eval" ? eval(file, tag) : qatlab({"info", file}, tag);
        EXPECT_TRUE(FailedWith(r, kRuntimeFailure, command, {file}));
      }
      ++inputs;
    }
  }
  EXPECT_GT(inputs, 0u);
}

// ------------------------------------------------------------------------------- outputs on disk

TEST_F(BadInputCli, ConvertDoesNotReplaceAFileWithoutOverwrite) {
  const std::string out = work("existing.h5");
  write_text(out, "precious");
  EXPECT_TRUE(FailedWith(qatlab({"convert", qat_ckpt_, "-o", out}, "refused"), kUsageError, "convert",
                         {out, "already exists", "--overwrite"}));
  EXPECT_EQ(read_text(out), "precious");
  ASSERT_TRUE(Succeeded(qatlab({"convert", qat_ckpt_, "-o", out, "--overwrite"}, "replaced")));
  EXPECT_EQ(H5File::open_read(out).get_attr_string("/", "format"), "qatlab-int8-graph");
  // Never over its own input, --overwrite or not.
  const std::string ckpt = copy_of(qat_ckpt_, "self.h5");
  EXPECT_TRUE(FailedWith(qatlab({"convert", ckpt, "-o", ckpt, "--overwrite"}, "self"), kUsageError, "convert",
                         {"is the checkpoint being converted"}));
}

TEST_F(BadInputCli, OutputsThatCannotBeWrittenFailInOneLineAndKeepWhatWasThere) {
  // An output path that is a directory, or inside a file.
  fs::create_directories(work("a_directory"));
  EXPECT_TRUE(FailedWith(qatlab({"convert", qat_ckpt_, "-o", work("a_directory"), "--overwrite"}, "dir"),
                         kRuntimeFailure, "convert", {"is a directory"}));
  write_text(work("a_file"), "x");
  EXPECT_TRUE(FailedWith(qatlab({"convert", qat_ckpt_, "-o", work("a_file") + "/model.h5"}, "under-file"),
                         kRuntimeFailure, "convert", {"does not exist"}));
  EXPECT_EQ(read_text(work("a_file")), "x");
  // A run directory that is a file: refused before any work, the file kept.
  EXPECT_TRUE(FailedWith(qatlab({"train", "--model", "mlp", "--epochs", "1", "--data-dir", data_dir_, "--threads", "2",
                                 "--progress", "none", "--out", work("a_file")},
                                "train-file"),
                         kUsageError, "train", {work("a_file"), "is a file, not a directory"}));
  EXPECT_EQ(read_text(work("a_file")), "x");
}

// A tmpfs mounted for one test (root only): small, or read-only.
class Mount {
 public:
  Mount(const std::string& dir, const std::string& options) : dir_(dir) {
    fs::create_directories(dir);
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~Mount() {
    if (mounted_) ::umount(dir_.c_str());
  }
  bool mounted() const { return mounted_; }
  void remount_read_only() { mounted_ = mounted_ && ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, nullptr) == 0; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST_F(BadInputCli, DiskFullAndReadOnlyFoldersLoseNothing) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs (run the suite as root to test a full disk)";
  // A disk with room for one integer model and a bit more: the first convert fits, the second cannot.
  const auto model_bytes = fs::file_size(int8_model_);
  Mount disk(work("disk"), "size=" + std::to_string((model_bytes * 3 / 2 / 4096 + 1) * 4096));
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (no CAP_SYS_ADMIN?)";
  const std::string out = work("disk") + "/model.int8.h5";
  ASSERT_TRUE(Succeeded(qatlab({"convert", qat_ckpt_, "-o", out}, "first")));
  const std::string before = read_text(out);
  const RunResult full = qatlab({"convert", qat_ckpt_, "-o", out, "--overwrite"}, "full");
  EXPECT_TRUE(FailedWith(full, kRuntimeFailure, "convert", {out}));
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  EXPECT_EQ(read_text(out), before);
  EXPECT_EQ(names_in(work("disk")), std::vector<std::string>{"model.int8.h5"});  // no temporary left

  // A training run whose checkpoint cannot be written stops with the reason, leaving no partial file.
  const RunResult train = qatlab({"train", "--model", "mlp", "--epochs", "1", "--data-dir", data_dir_, "--threads", "2",
                                  "--progress", "none", "--out", work("disk") + "/run"},
                                 "train");
  EXPECT_TRUE(FailedWith(train, kRuntimeFailure, "train", {"No space left on device"}));
  EXPECT_FALSE(fs::exists(work("disk") + "/run/checkpoint.h5"));
  EXPECT_EQ(read_text(out), before);

  // Read-only: refused before any work, the file there untouched.
  disk.remount_read_only();
  ASSERT_TRUE(disk.mounted());
  EXPECT_TRUE(FailedWith(qatlab({"convert", qat_ckpt_, "-o", out, "--overwrite"}, "ro"), kRuntimeFailure, "convert",
                         {out, "not writable"}));
  EXPECT_EQ(read_text(out), before);
}

// ------------------------------------------------------------------------------ option values

// A config file value holding Boost's own placeholder: one line and exit 2, not a hang (fuzzing found
// the hang in Boost's message substitution; ctest's timeout would end this test if it came back).
TEST_F(BadInputCli, PlaceholderLikeValuesInAConfigFileAreUsageErrors) {
  const std::string ini = work("x.ini");
  write_text(ini, "threads = %value%\n");
  EXPECT_TRUE(FailedWith(qatlab({"train", "--model", "mlp", "--data-dir", data_dir_, "--config", ini}, "ini"),
                         kUsageError, "train", {"option 'threads' is invalid"}));
}

TEST_F(BadInputCli, AbsurdOptionValuesAreUsageErrorsOnEverySubcommand) {
  struct Case {
    Args args;
    std::string command, message;
  };
  const Args train = {"train", "--model", "mlp", "--data-dir", data_dir_, "--progress", "none"};
  const auto with = [](Args a, const Args& more) {
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  const std::vector<Case> cases = {
      {with(train, {"--threads", "10000"}), "train", "--threads must be in 0..1024"},
      {with(train, {"--threads", "-1"}), "train", "--threads must be in 0..1024"},
      // Boost's message substitution looped forever on a value holding its own placeholder (fuzzing).
      {with(train, {"--threads", "%value%"}), "train", "option '--threads' is invalid"},
      {with(train, {"--batch-size", "1000000000000"}), "train", "--batch-size must be in 1..65536"},
      {with(train, {"--seed", "-1"}), "train", "--seed must be in 0..9223372036854775807, got -1"},
      {with(train, {"--out", ""}), "train", "--out must not be empty"},
      {with(train, {"--schedule", "bogus"}), "train", "unknown lr schedule 'bogus'"},
      {with(train, {"--gamma", "nan"}), "train", "gamma must be > 0"},
      {with(train, {"--schedule", "multistep", "--milestones", "3,,x"}), "train", "milestones"},
      {with(train, {"--weight-decay", "inf"}), "train", "--weight-decay must be >= 0"},
      {with(train, {"--epochs", "1000000000"}), "train", "--epochs must be in 1..100000"},
      {{"qat", "--model", "mlp", "--data-dir", data_dir_, "--freeze-bn-after", "-5"}, "qat",
       "--freeze-bn-after must be an epoch in 0..100000 or -1 (never), got -5"},
      {{"eval", float_ckpt_, "--kernel", "cuda"}, "eval", "--kernel: unknown kernel path 'cuda'"},
      {{"eval", float_ckpt_, "--batch-size", "-4"}, "eval", "--batch-size must be in 1..65536"},
      {{"ptq", float_ckpt_, "--seed", "-1"}, "ptq", "--seed must be in 0.."},
      {{"ptq", float_ckpt_, "--calib-batches", "0"}, "ptq", "--calib-batches must be in 1..100000"},
      {{"bench", "--float", float_ckpt_, "--int8", int8_model_, "--seconds", "nan"}, "bench", "--seconds must be in"},
      {{"bench", "--float", float_ckpt_, "--int8", int8_model_, "--kernel", "cuda"}, "bench", "--kernel"},
      {{"inspect", qat_ckpt_, "--threads", "5000"}, "inspect", "--threads must be in 0..1024"},
      {{"sweep", float_ckpt_, "--qat-lr", "inf"}, "sweep", "--qat-lr must be > 0"},
      {{"convert", qat_ckpt_, "-o", ""}, "convert", "--output must not be empty"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(join_command(cases[i].args));
    EXPECT_TRUE(FailedWith(qatlab(cases[i].args, "case" + std::to_string(i)), kUsageError, cases[i].command,
                           {cases[i].message}));
  }
}

}  // namespace
}  // namespace qatlab::testing
