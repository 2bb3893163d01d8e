// cli.cpp: option parsing shared by the subcommands.
#include "apps/cli.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "core/distributed.h"

namespace qatlab {

namespace {

// Boost 1.74's error::what() replaces "%value%" (and its other placeholders) in its message in a loop
// that never ends when the substituted value contains the placeholder itself: `--threads '%value%'`
// hung qatlab (found by fuzzing the INI reader). Where the input holds a '%', an error is therefore
// described from the option's name alone, without what().
std::string po_error_text(const po::error& e, bool input_has_percent) {
  if (!input_has_percent) return e.what();
  if (const auto* named = dynamic_cast<const po::error_with_option_name*>(&e))
    return "the value given for option '" + named->get_option_name() + "' is invalid";
  return "invalid options (a value containing '%' was not accepted)";
}

}  // namespace

bool parse_command(const std::string& command, const std::string& synopsis, po::options_description& desc,
                   const po::positional_options_description& positional, int argc, char** argv,
                   po::variables_map& vm, const std::string& fallback_ini, const std::string& fallback_source) {
  desc.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "read options from an INI file (key = value); the command line wins");
  bool has_percent = false;  // in argv or a config file: see po_error_text
  for (int i = 1; i < argc; ++i) has_percent = has_percent || std::string(argv[i]).find('%') != std::string::npos;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: qatlab " << command << " " << synopsis << "\n\n" << desc << "\n";
      return false;
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream file(path);
      if (!file) throw UsageError("cannot read config file '" + path + "'");
      std::ostringstream text;
      text << file.rdbuf();
      has_percent = has_percent || text.str().find('%') != std::string::npos;
      std::istringstream in(text.str());
      // Values already stored from the command line are kept: Boost keeps the first value it stores.
      po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/false), vm);
    }
    if (!fallback_ini.empty()) {
      // Settings stored in a file: their mistakes are the file's, not a usage error.
      try {
        std::istringstream in(fallback_ini);
        po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/true), vm);
      } catch (const po::error& e) {
        throw std::runtime_error(
            (fallback_source.empty() ? std::string("stored settings") : fallback_source) + ": " +
            stored_setting_error(po_error_text(e, fallback_ini.find('%') != std::string::npos)));
      }
    }
    po::notify(vm);
    // An empty value ("--out ''") is never meaningful: a path, a name or a list is missing.
    for (const auto& [name, value] : vm) {
      const auto* text = boost::any_cast<std::string>(&value.value());
      if (text && text->empty() && !value.defaulted())
        throw UsageError("--" + name + " must not be empty (see qatlab " + command + " --help)");
    }
  } catch (const po::error& e) {
    throw UsageError(po_error_text(e, has_percent) + " (see qatlab " + command + " --help)");
  }
  return true;
}

namespace {

// A float as settings store it: 9 significant digits, enough to give the same float back.
std::string float_text(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

// The text of an option value as it would be written on the command line or in an INI file.
std::string value_text(const boost::any& v) {
  if (auto p = boost::any_cast<std::string>(&v)) return *p;
  if (auto p = boost::any_cast<int64_t>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<int>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<uint64_t>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<bool>(&v)) return *p ? "true" : "false";
  if (auto p = boost::any_cast<float>(&v)) return float_text(*p);
  if (auto p = boost::any_cast<double>(&v)) return float_text(*p);
  return "";
}

}  // namespace

void SettingsIni::add(const std::string& key, const std::string& value) { text_ += key + " = " + value + "\n"; }
void SettingsIni::add(const std::string& key, int64_t value) { add(key, std::to_string(value)); }
void SettingsIni::add(const std::string& key, int value) { add(key, std::to_string(value)); }
void SettingsIni::add(const std::string& key, uint64_t value) { add(key, std::to_string(value)); }
void SettingsIni::add(const std::string& key, bool value) { add(key, std::string(value ? "true" : "false")); }
void SettingsIni::add(const std::string& key, float value) { add(key, float_text(value)); }
void SettingsIni::add_if_given(const std::string& key, const std::string& value) {
  if (!value.empty()) add(key, value);
}
void SettingsIni::add_each(const std::string& key, const std::vector<std::string>& values) {
  for (const std::string& v : values) add(key, v);
}

std::string agree_on_rank0(const std::function<std::string()>& on_rank0) {
  if (world_size() == 1) return on_rank0();
  std::string text;
  if (world_rank() == 0) {
    try {
      text = "ok " + on_rank0();
    } catch (const UsageError& e) {
      text = std::string("usage ") + e.what();
    } catch (const std::exception& e) {
      text = std::string("error ") + e.what();
    }
  }
  text = broadcast_text(text);
  if (text.rfind("usage ", 0) == 0) throw UsageError(text.substr(6));
  if (text.rfind("error ", 0) == 0) throw CollectiveError(text.substr(6));
  return text.substr(3);
}

std::string settings_ini(const po::variables_map& vm, const po::options_description& desc) {
  std::string out;
  for (const auto& opt : desc.options()) {
    const std::string& name = opt->long_name();
    if (name == "help" || name == "config" || !vm.count(name) || vm[name].empty()) continue;
    // A repeatable option is written as one line per value, which is how INI files repeat a key.
    if (auto list = boost::any_cast<std::vector<std::string>>(&vm[name].value())) {
      for (const std::string& v : *list) out += name + " = " + v + "\n";
      continue;
    }
    out += name + " = " + value_text(vm[name].value()) + "\n";
  }
  return out;
}

std::string prescan_option(int argc, char** argv, const std::string& name) {
  const std::string flag = "--" + name;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == flag && i + 1 < argc) return argv[i + 1];
    if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
  }
  return "";
}

std::string stored_setting_error(const std::string& message) {
  std::string m = message;
  const std::string boost_file = "the options configuration file contains";
  if (m.rfind(boost_file, 0) == 0) return printable("stored settings contain" + m.substr(boost_file.size()), 300);
  if (m.rfind("--", 0) == 0) return printable("stored setting " + m.substr(2), 300);
  return printable("stored settings: " + m, 300);
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

void require_batch_size(const std::string& option, int64_t value) {
  require(value >= 1 && value <= kMaxBatchSize, "--" + option + " must be in 1.." + std::to_string(kMaxBatchSize) +
                                                     ", got " + std::to_string(value));
}

void require_threads(const std::string& option, int64_t value) {
  require(value >= 0 && value <= kMaxThreads, "--" + option + " must be in 0.." + std::to_string(kMaxThreads) +
                                                  " (0 = every core), got " + std::to_string(value));
}

void require_seed(const std::string& option, uint64_t value) {
  require(value <= static_cast<uint64_t>(INT64_MAX),
          "--" + option + " must be in 0.." + std::to_string(INT64_MAX) + ", got " +
              std::to_string(static_cast<int64_t>(value)));
}

void require_finite_in(const std::string& option, double value, double lo, double hi, const std::string& range) {
  require(std::isfinite(value) && value >= lo && value <= hi,
          "--" + option + " must be " + range + ", got " + num_str(value));
}

void guard_output(const std::string& option, const std::string& path, bool overwrite) {
  if (path.empty() || overwrite || !std::filesystem::exists(path)) return;
  throw UsageError(option + " " + path + " already exists: pass --overwrite to replace it, or choose another file");
}

void require_output_directory(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty() && !std::filesystem::is_directory(dir, ec))
    throw std::runtime_error(path + ": cannot write: directory '" + dir.string() + "' does not exist");
}

KernelPath kernel_option(const std::string& value) {
  if (value == "auto") return best_kernel_path();
  try {
    return parse_kernel_path(value);
  } catch (const std::exception& e) {
    throw UsageError(std::string("--kernel: ") + e.what());
  }
}

}  // namespace qatlab
