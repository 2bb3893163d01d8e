// fuzz_ini.cpp: an INI file given to `qatlab train --config FILE`: parse_command (apps/cli.h) with the
// train, data and QAT options, then the checks train and qat apply to the values read.
#include "fuzz_util.h"

#include "apps/cli.h"
#include "apps/data_setup.h"
#include "apps/qat_options.h"
#include "apps/train_options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qatlab::fuzz::work_dir() + "/config.ini";
  qatlab::fuzz::write_file(path, data, size);
  try {
    qatlab::TrainOptions s;
    qatlab::DataSettings d;
    qatlab::QatSettings q;
    qatlab::po::options_description desc;
    qatlab::add_train_options(desc, s);
    qatlab::add_data_options(desc, d);
    qatlab::add_qconfig_options(desc, q);
    qatlab::po::variables_map vm;
    std::string args[] = {"train", "--config", path};
    char* argv[] = {args[0].data(), args[1].data(), args[2].data()};
    if (!qatlab::parse_command("train", "[options]", desc, {}, 3, argv, vm)) return 0;
    qatlab::validate_train_options(s);
    qatlab::qconfig_from(q);
    qatlab::settings_ini(vm, desc);
  } catch (const std::exception&) {
  }
  return 0;
}
