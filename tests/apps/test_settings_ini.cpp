// test_settings_ini.cpp: the settings the commands store, written from typed values (SettingsIni:
// train_options_ini, data_settings_ini, qat_settings_ini, ptq_settings_ini), are line for line what
// settings_ini writes from the same options parsed by Boost, for `train`, `qat` and `ptq`, with every
// option at its default and with every option given. The sweep stores its runs' settings the typed way;
// an option added to a command but not to its typed form fails here.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/data_setup.h"
#include "apps/qat_options.h"
#include "apps/train_options.h"

namespace qatlab {
namespace {

// Parses `args` (the command's name first) with `desc` as the command would.
po::variables_map parse(const std::string& command, po::options_description& desc, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  po::variables_map vm;
  po::positional_options_description positional;
  EXPECT_TRUE(parse_command(command, "[options]", desc, positional, static_cast<int>(argv.size()), argv.data(), vm));
  return vm;
}

const std::vector<std::string> kEveryTrainOption = {
    "--model", "mlp", "--epochs", "7", "--batch-size", "48", "--optimizer", "adamw", "--lr", "0.0123",
    "--momentum", "0.8", "--nesterov", "--weight-decay", "0.0001", "--decay-all", "--schedule", "multistep",
    "--step-epochs", "3", "--gamma", "0.5", "--milestones", "2,5", "--warmup-epochs", "1", "--label-smoothing", "0.1",
    "--clip-grad-norm", "2.5", "--swa-start", "5", "--swa-lr", "0.01", "--distill", "teacher.h5", "--distill", "second.h5", "--distill-weight", "0.5", "--distill-temperature", "3",
    "--seed", "42", "--threads", "3", "--grad-chunks", "4", "--out", "runs/x",
    "--overwrite", "--resume", "runs/x/checkpoint.h5", "--stop-after", "2", "--progress", "plain"};
const std::vector<std::string> kEveryDataOption = {
    "--dataset", "cifar10", "--data-dir", "/data", "--train-limit", "100", "--test-limit", "50",
    "--mean", "0.5,0.4,0.3", "--std", "0.2", "--augment", "flip"};
const std::vector<std::string> kEveryQatOption = {
    "--wbits", "4", "--abits", "6", "--per-channel", "false", "--observer", "histogram", "--weight-observer", "ema",
    "--wquant", "lsq", "--aquant", "pact", "--lsq-init", "mse", "--lsq-grad-scale", "layer", "--weight-range", "full", "--layer-bits", "features.0=8:8", "--layer-bits", "Linear=8:",
    "--freeze-bn-after", "3", "--freeze-observers-after", "4"};

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(SettingsIni, TrainOptionsAreWrittenAsSettingsIniWritesThem) {
  for (const std::vector<std::string>& given : {std::vector<std::string>{}, concat(kEveryTrainOption, kEveryDataOption)}) {
    TrainOptions o;
    DataSettings d;
    po::options_description desc;
    add_train_options(desc, o);
    add_data_options(desc, d);
    const po::variables_map vm = parse("train", desc, concat({"train"}, given));
    EXPECT_EQ(train_options_ini(o) + data_settings_ini(d), settings_ini(vm, desc));
  }
}

TEST(SettingsIni, QatOptionsAreWrittenAsSettingsIniWritesThem) {
  for (const std::vector<std::string>& given :
       {std::vector<std::string>{"--from", "f.h5"}, concat(concat(concat(kEveryQatOption, {"--from", "f.h5"}), kEveryTrainOption), kEveryDataOption)}) {
    QatSettings q;
    std::string from;
    TrainOptions o;
    DataSettings d;
    po::options_description desc;  // in the order `qat` adds them
    add_qconfig_options(desc, q);
    desc.add_options()("from", po::value(&from), "");
    add_train_options(desc, o);
    add_data_options(desc, d);
    const po::variables_map vm = parse("qat", desc, concat({"qat"}, given));
    SettingsIni from_line;
    from_line.add("from", from);
    EXPECT_EQ(qat_settings_ini(q) + from_line.text() + train_options_ini(o) + data_settings_ini(d), settings_ini(vm, desc));
  }
}

TEST(SettingsIni, PtqOptionsAreWrittenAsSettingsIniWritesThem) {
  const std::vector<std::string> every_ptq_option = {"--checkpoint", "f.h5", "--calib-batches", "9", "--batch-size", "17",
                                                     "--seed", "5", "--out", "q", "--overwrite", "--threads", "2"};
  for (const std::vector<std::string>& given :
       {std::vector<std::string>{}, concat(concat(every_ptq_option, kEveryQatOption), kEveryDataOption)}) {
    PtqOptions p;
    QatSettings q;
    DataSettings d;
    po::options_description desc;  // in the order `ptq` adds them
    add_ptq_options(desc, p);
    add_qconfig_options(desc, q);
    add_data_options(desc, d);
    const po::variables_map vm = parse("ptq", desc, concat({"ptq"}, given));
    EXPECT_EQ(ptq_settings_ini(p, q, d), settings_ini(vm, desc));
  }
}

TEST(SettingsIni, FloatsKeepNineSignificantDigitsAndOptionsWithoutADefaultAppearOnlyWhenGiven) {
  SettingsIni ini;
  ini.add("lr", 0.05f);
  ini.add("nesterov", false);
  ini.add("seed", uint64_t{18446744073709551615u});
  ini.add_if_given("out", "");
  ini.add_each("layer-bits", {"a=8:8", "b=4:4"});
  EXPECT_EQ(ini.text(), "lr = 0.0500000007\nnesterov = false\nseed = 18446744073709551615\nlayer-bits = a=8:8\nlayer-bits = b=4:4\n");
}

}  // namespace
}  // namespace qatlab
