// cmd_train.cpp: `qatlab train`: train a float model (built-in or from a description file), or resume a
// saved run.
#include "apps/commands.h"
#include "apps/train_command.h"
#include "nn/model_description.h"
#include "nn/train/train_run.h"

namespace qatlab {

int cmd_train(int argc, char** argv) {
  TrainCommand cmd("train", "float");
  if (!cmd.parse(argc, argv)) return 0;
  Rng rng(cmd.settings().train.seed);
  const ModelDescription description = cmd.model_description();
  const ModulePtr model = build_model(description, cmd.data().spec, rng);
  train_model(cmd.make_run(model, description));
  return 0;
}

}  // namespace qatlab
