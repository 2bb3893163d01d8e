// cli.h: what every subcommand shares: option parsing with --config files, usage errors, results files.
#pragma once

#include <boost/program_options.hpp>

#include "core/format.h"
#include <stdexcept>
#include <string>

namespace qatlab {

namespace po = boost::program_options;

// A mistake in how the command was called (unknown option, invalid value): exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses a subcommand's arguments: first the command line, then the INI file named by --config, then
// `fallback_ini` (settings stored in a checkpoint being resumed); an earlier source wins over a later
// one. Adds --help and --config to `desc`. Returns false when --help was asked for (the help has been
// printed). Throws UsageError for anything Boost rejects.
bool parse_command(const std::string& command, const std::string& synopsis, po::options_description& desc,
                   const po::positional_options_description& positional, int argc, char** argv,
                   po::variables_map& vm, const std::string& fallback_ini = "");

// The value given for `--name VALUE` or `--name=VALUE` in argv, "" if absent: for options that decide
// how the rest is parsed (--resume).
std::string prescan_option(int argc, char** argv, const std::string& name);

// The resolved settings as INI lines "key = value", in the order of `desc`, skipping help/config and
// options without a value: what a checkpoint stores and --config reads back.
std::string settings_ini(const po::variables_map& vm, const po::options_description& desc);

// The value of `key` in INI text as written by settings_ini ("" if absent).
std::string ini_value(const std::string& ini, const std::string& key);

// Throws UsageError("--name must be ..., got value") unless ok.
void require(bool ok, const std::string& message);

// An output file the command would replace: a UsageError unless --overwrite, checked before any work
// ("--out FILE already exists: pass --overwrite ..."). An empty path is no file.
void guard_output(const std::string& option, const std::string& path, bool overwrite);

// "mm:ss" or "h:mm:ss".
std::string format_duration(double seconds);

}  // namespace qatlab
