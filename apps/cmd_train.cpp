// cmd_train.cpp: `qatlab train`: train a float model from the zoo, or resume a saved run.
#include "apps/commands.h"
#include "apps/train_command.h"
#include "nn/zoo.h"

namespace qatlab {

int cmd_train(int argc, char** argv) {
  TrainCommand cmd("train", "float");
  if (!cmd.parse(argc, argv)) return 0;
  Rng rng(cmd.settings().seed);
  const ModulePtr model = make_model(cmd.settings().model, cmd.data().spec, rng);
  return cmd.run(model, cmd.settings().model);
}

}  // namespace qatlab
