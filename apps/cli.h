// cli.h: what every subcommand shares: option parsing with --config files, usage errors, results files.
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/format.h"
#include "quant/engine/kernels/kernel_path.h"

namespace qatlab {

namespace po = boost::program_options;

// A mistake in how the command was called (unknown option, invalid value): exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Under mpirun: runs `on_rank0` on process 0 alone and gives every process its result, or makes every
// process throw what it threw (a UsageError as one, anything else as a CollectiveError, core/distributed.h),
// so that no process waits for one that failed. In a single process: on_rank0().
std::string agree_on_rank0(const std::function<std::string()>& on_rank0);

// Parses a subcommand's arguments: first the command line, then the INI file named by --config, then
// `fallback_ini` (settings stored in a checkpoint being resumed); an earlier source wins over a later
// one. Adds --help and --config to `desc`. Returns false when --help was asked for (the help has been
// printed). Throws UsageError for anything Boost rejects on the command line or in --config, and
// std::runtime_error "<fallback_source>: stored setting ..." for what it rejects in fallback_ini.
bool parse_command(const std::string& command, const std::string& synopsis, po::options_description& desc,
                   const po::positional_options_description& positional, int argc, char** argv,
                   po::variables_map& vm, const std::string& fallback_ini = "",
                   const std::string& fallback_source = "");

// Settings as INI lines written from typed values, each exactly as settings_ini writes a parsed option
// of that type (floats to 9 significant digits, bools as true / false): what a run made by calling the
// library rather than from a command line stores (a sweep's cells and float models), the same as the
// command line doing the same would store. tests/apps/test_settings_ini.cpp holds each command's typed
// form (train_options_ini, qat_settings_ini, ...) to settings_ini.
class SettingsIni {
 public:
  void add(const std::string& key, const std::string& value);
  void add(const std::string& key, const char* value) { add(key, std::string(value)); }
  void add(const std::string& key, int64_t value);
  void add(const std::string& key, int value);
  void add(const std::string& key, uint64_t value);
  void add(const std::string& key, bool value);
  void add(const std::string& key, float value);
  // An option without a default value: written only when given ("" is never a given value).
  void add_if_given(const std::string& key, const std::string& value);
  // A repeatable option: one line per value.
  void add_each(const std::string& key, const std::vector<std::string>& values);
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// The value given for `--name VALUE` or `--name=VALUE` in argv, "" if absent: for options that decide
// how the rest is parsed (--resume).
std::string prescan_option(int argc, char** argv, const std::string& name);

// The resolved settings as INI lines "key = value", in the order of `desc`, skipping help/config and
// options without a value: what a checkpoint stores and --config reads back.
std::string settings_ini(const po::variables_map& vm, const po::options_description& desc);

// A complaint about a setting stored in a file, reworded so that it blames the file rather than a
// command-line option the user never gave: "--abits must be in 2..8, got 9" -> "stored setting abits
// must be in 2..8, got 9"; Boost's "the options configuration file contains an invalid line 'x'"
// -> "stored settings contain an invalid line 'x'". Control bytes are escaped.
std::string stored_setting_error(const std::string& message);

// Throws UsageError("--name must be ..., got value") unless ok.
void require(bool ok, const std::string& message);

// Bounds shared by the subcommands' numeric options: values past them are typing mistakes that would
// otherwise start a thousand threads or allocate terabytes.
inline constexpr int kMaxThreads = 1024;
inline constexpr int64_t kMaxBatchSize = 65536;

// UsageError unless 1 <= value <= kMaxBatchSize ("--batch-size must be in 1..65536, got 0").
void require_batch_size(const std::string& option, int64_t value);
// UsageError unless 0 <= value <= kMaxThreads (0 = every core).
void require_threads(const std::string& option, int64_t value);
// Seeds are unsigned, and Boost reads "-1" as 2^64-1: refuse anything above INT64_MAX, which is
// what a negative number becomes.
void require_seed(const std::string& option, uint64_t value);
// UsageError unless value is finite and lo <= value <= hi (the message shows the range as given).
void require_finite_in(const std::string& option, double value, double lo, double hi, const std::string& range);

// An output file the command would replace: a UsageError unless --overwrite, checked before any work
// ("--out FILE already exists: pass --overwrite ..."). An empty path is no file.
void guard_output(const std::string& option, const std::string& path, bool overwrite);

// A file the command will write: std::runtime_error "FILE: cannot write: directory 'D' does not exist"
// when its directory is missing, checked before any work.
void require_output_directory(const std::string& path);

// The kernels named by a --kernel option ("auto": the best this CPU has). UsageError for an unknown
// name or one this CPU cannot run.
KernelPath kernel_option(const std::string& value);

}  // namespace qatlab
