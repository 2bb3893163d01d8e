// train_options.h: the options `train` and `qat` share: TrainOptions (the library's TrainSettings,
// nn/train/train_loop.h, and what the command adds), their --help, their checks, and the INI lines a
// checkpoint stores them as; --threads and --grad-chunks resolved; the run directory.
#pragma once

#include <cstdint>
#include <string>

#include "apps/cli.h"
#include "nn/train/train_loop.h"

namespace qatlab {

struct TrainOptions {
  // A built-in model or a model description file (qat --from: also the checkpoint's network, by name).
  std::string model = "lenet5";
  TrainSettings train;
  int threads = 0;  // 0 = all cores (shared among the processes of a run on one machine)
  std::string out;  // the run directory ("": runs/<model>-<dataset>, numbered)
  bool overwrite = false;
  std::string resume;  // a checkpoint whose run this continues
  // Float checkpoints of the same task: the teacher, or with several their ensemble (nn/train/teacher.h);
  // empty: none.
  std::vector<std::string> distill;
  // With distill: the teachers' outputs computed ahead (qatlab teacher-cache; nn/train/teacher_cache.h),
  // read instead of running the teachers. Like threads, how the run computes, not what: a resumed run
  // may add, change or drop it.
  std::string teacher_cache;
  std::string progress = "auto";  // auto | bar | plain | none (apps/progress.h)
  // Every op checks its values for NaN and infinity (core/anomaly.h): like threads, how the run computes,
  // not what; a resumed run may add or drop it.
  bool detect_anomaly = false;
};

// The chunk count a run uses: grad_chunks, or for 0 the default (1 in a single process, kDefaultChunks
// under mpirun). UsageError when the processes outnumber the chunks or the chunks the batch.
inline constexpr int64_t kDefaultChunks = 8;
int64_t resolve_grad_chunks(int64_t grad_chunks, int64_t batch_size);

// More epochs than anyone trains: a bound against typing mistakes (a history row is kept per epoch).
inline constexpr int64_t kMaxEpochs = 100000;

void add_train_options(po::options_description& desc, TrainOptions& o);
// Checks ranges (lr > 0, batch >= 1, epochs >= 0, ...) and throws UsageError naming the option; with
// check_model, also that --model is a built-in model or a description file (which may then throw
// ModelDescriptionError for a bad file).
void validate_train_options(const TrainOptions& o, bool check_model = true);
// Applies --threads (0 = every core; under mpirun, the cores divided among this machine's processes) to
// OpenMP; returns the count in use. UsageError outside 0..kMaxThreads.
int apply_threads(int threads);

// The options as the INI lines settings_ini writes for add_train_options (in that order): what train
// and qat store in their checkpoints.
std::string train_options_ini(const TrainOptions& o);

// --out DIR: refuses a directory that already holds a checkpoint unless --overwrite; without --out,
// picks runs/<model>-<dataset>, then -2, -3, ... so an earlier run is never overwritten.
std::string choose_out_dir(const std::string& out, bool overwrite, const std::string& stem);

}  // namespace qatlab
