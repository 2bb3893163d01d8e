// test_distributed_cli.cpp: `mpirun -np N qatlab train|qat` against the same run in one process: with the
// same global batch and chunk count (--grad-chunks), weights, quantizer parameters, batch-norm statistics
// and optimizer state come out identical byte for byte for N = 1, 2, 3; --resume with another N; a
// killed process ends the run and the last checkpoint resumes to the uninterrupted result. Skipped,
// saying why, in a build without MPI or where mpirun is missing.
#include <dirent.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "apps/cli_harness.h"
#include "core/distributed.h"
#include "nn/checkpoint.h"
#include "tests/data/file_dataset_writers.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

Args concat(Args a, const Args& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Why the suite cannot run here, or "" when it can.
std::string skip_reason() {
  if (!distributed_available()) return "qatlab was built without MPI (install libopenmpi-dev openmpi-bin and rebuild)";
  if (std::system("mpirun --version > /dev/null 2>&1") != 0) return "mpirun is not on PATH (install openmpi-bin)";
  return "";
}

// Every tensor of both states, byte for byte (the HDF5 datasets as loaded).
::testing::AssertionResult SameTensors(const NamedTensors& a, const NamedTensors& b, const std::string& what) {
  std::map<std::string, Tensor> ma(a.begin(), a.end()), mb(b.begin(), b.end());
  if (ma.empty() || ma.size() != mb.size())
    return ::testing::AssertionFailure() << what << ": " << ma.size() << " vs " << mb.size() << " tensors";
  for (const auto& [name, ta] : ma) {
    const auto it = mb.find(name);
    if (it == mb.end()) return ::testing::AssertionFailure() << what << " " << name << " missing";
    const Tensor& tb = it->second;
    if (ta.shape() != tb.shape()) return ::testing::AssertionFailure() << what << " " << name << ": shapes differ";
    if (std::memcmp(ta.data(), tb.data(), sizeof(float) * ta.numel()) != 0)
      return ::testing::AssertionFailure() << what << " " << name << " differs (first values " << ta.data()[0]
                                           << " vs " << tb.data()[0] << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult SameRun(const std::string& a_path, const std::string& b_path) {
  const Checkpoint a = load_checkpoint(a_path), b = load_checkpoint(b_path);
  if (a.epoch != b.epoch) return ::testing::AssertionFailure() << "epochs " << a.epoch << " vs " << b.epoch;
  if (auto r = SameTensors(a.model_state, b.model_state, "model tensor"); !r) return r;
  return SameTensors(a.optimizer_state, b.optimizer_state, "optimizer tensor");
}

class DistributedCli : public CliSuite {
 protected:
  static void SetUpTestSuite() {
    set_up_suite("distributed", 256, 64, /*seed=*/11);
    // CIFAR-shaped: 3 x 32 x 32, 10 classes.
    TinySpec spec;
    spec.c = 3, spec.h = 32, spec.w = 32, spec.classes = 10, spec.n_train = 192, spec.n_test = 32;
    cifar_ = *suite_dir_ / "cifar.h5";
    write_hdf5_dataset(cifar_, spec);
  }
  static void TearDownTestSuite() { tear_down_suite(); }

  void SetUp() override {
    if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    CliSuite::SetUp();
  }

  // `mpirun -np N qatlab args...` on this machine (processes may outnumber its cores; as root too).
  RunResult mpirun(int n, const Args& args, const std::string& tag) {
    const std::string out = work(tag + ".out"), err = work(tag + ".err");
    const Args launch = concat({"-np", std::to_string(n), "--oversubscribe", "--allow-run-as-root", kQatlab}, args);
    return wait_qatlab(spawn_program("mpirun", launch, out, err), out, err, "mpirun " + join_command(launch));
  }

  // LeNet-5 W4A4 QAT from scratch on the suite's synthetic MNIST, 8 batches of 32 per epoch.
  static Args lenet(const std::string& aquant = "lsq", const std::string& chunks = "4") {
    return {"qat",          "--model",       "lenet5", "--dataset",   "mnist", "--data-dir", data_dir_,
            "--wbits",      "4",             "--abits", "4",          "--wquant", "lsq",     "--aquant",
            aquant,         "--batch-size",  "32",      "--grad-chunks", chunks, "--threads", "1",
            "--progress",   "none",          "--test-limit", "32"};
  }
  static inline std::string cifar_;
};

TEST_F(DistributedCli, LenetLsqGivesTheSameWeightsOnOneTwoAndThreeProcesses) {
  const Args args = concat(lenet(), {"--epochs", "1"});
  ASSERT_TRUE(Succeeded(qatlab(concat(args, {"--out", work("one")}), "one")));
  const RunResult two = mpirun(2, concat(args, {"--out", work("two")}), "two");
  ASSERT_TRUE(Succeeded(two));
  // Process 0 alone reports.
  EXPECT_NE(two.out.find("2 processes x 1 threads, each batch in 4 chunks"), std::string::npos) << two.out;
  EXPECT_EQ(two.out.find("results"), two.out.rfind("results")) << two.out;
  EXPECT_TRUE(SameRun(work("one/checkpoint.h5"), work("two/checkpoint.h5")));
  // 4 chunks over 3 processes: 1, 1 and 2.
  ASSERT_TRUE(Succeeded(mpirun(3, concat(args, {"--out", work("three")}), "three")));
  EXPECT_TRUE(SameRun(work("one/checkpoint.h5"), work("three/checkpoint.h5")));
  // The comparison can fail: another chunk count gives other weights (per-chunk statistics, another sum).
  ASSERT_TRUE(Succeeded(qatlab(concat(lenet("lsq", "2"), {"--epochs", "1", "--out", work("two_chunks")}), "c2")));
  EXPECT_FALSE(SameRun(work("one/checkpoint.h5"), work("two_chunks/checkpoint.h5")));
}

TEST_F(DistributedCli, PactAndFloatTrainingAgreeAcrossProcessCounts) {
  const Args pact = concat(lenet("pact"), {"--epochs", "1"});
  ASSERT_TRUE(Succeeded(qatlab(concat(pact, {"--out", work("pact1")}), "pact1")));
  ASSERT_TRUE(Succeeded(mpirun(3, concat(pact, {"--out", work("pact3")}), "pact3")));
  EXPECT_TRUE(SameRun(work("pact1/checkpoint.h5"), work("pact3/checkpoint.h5")));

  const Args mlp{"train", "--model", "mlp", "--dataset", "mnist", "--data-dir", data_dir_, "--epochs", "1",
                 "--batch-size", "64", "--grad-chunks", "8", "--threads", "1", "--progress", "none"};
  ASSERT_TRUE(Succeeded(qatlab(concat(mlp, {"--out", work("mlp1")}), "mlp1")));
  ASSERT_TRUE(Succeeded(mpirun(2, concat(mlp, {"--out", work("mlp2")}), "mlp2")));
  EXPECT_TRUE(SameRun(work("mlp1/checkpoint.h5"), work("mlp2/checkpoint.h5")));
}

// ResNet-20 carries batch norm (running statistics folded chunk by chunk) and moving-average observers
// whose ranges every chunk must share before it quantizes.
TEST_F(DistributedCli, ResNet20QatGivesTheSameWeightsAndStatisticsOnTwoAndThreeProcesses) {
  const Args args{"qat", "--model", "resnet20", "--dataset", cifar_, "--augment", "pad-crop:4,flip", "--epochs", "1",
                  "--batch-size", "64", "--grad-chunks", "4", "--threads", "1", "--progress", "none"};
  ASSERT_TRUE(Succeeded(qatlab(concat(args, {"--out", work("one")}), "one")));
  ASSERT_TRUE(Succeeded(mpirun(2, concat(args, {"--out", work("two")}), "two")));
  EXPECT_TRUE(SameRun(work("one/checkpoint.h5"), work("two/checkpoint.h5")));
  const Checkpoint c = load_checkpoint(work("two/checkpoint.h5"));
  bool has_running_mean = false;
  for (const auto& [name, t] : c.model_state) has_running_mean = has_running_mean || name.find("running_mean") != std::string::npos;
  EXPECT_TRUE(has_running_mean) << "the test is meant to cover batch norm";

  // W4A4 LSQ: step sizes initialised from the whole batch (the mse init: the chunks agree on the range, then
  // add their error sums), LSQ outputs fused into batch norm's pass.
  const Args lsq =
      concat(args, {"--wbits", "4", "--abits", "4", "--wquant", "lsq", "--aquant", "lsq", "--lsq-init", "mse"});
  ASSERT_TRUE(Succeeded(qatlab(concat(lsq, {"--out", work("lsq1")}), "lsq1")));
  ASSERT_TRUE(Succeeded(mpirun(3, concat(lsq, {"--out", work("lsq3")}), "lsq3")));
  EXPECT_TRUE(SameRun(work("lsq1/checkpoint.h5"), work("lsq3/checkpoint.h5")));
}

TEST_F(DistributedCli, ResumesWithAnotherProcessCount) {
  const Args args = concat(lenet(), {"--epochs", "2"});
  ASSERT_TRUE(Succeeded(qatlab(concat(args, {"--out", work("straight")}), "straight")));
  ASSERT_TRUE(Succeeded(mpirun(2, concat(args, {"--out", work("split"), "--stop-after", "1"}), "first")));
  EXPECT_EQ(load_checkpoint(work("split/checkpoint.h5")).epoch, 1);
  const Args resume{"qat", "--resume", work("split/checkpoint.h5"), "--threads", "1", "--progress", "none",
                    "--data-dir", data_dir_};
  ASSERT_TRUE(Succeeded(mpirun(3, resume, "second")));
  EXPECT_TRUE(SameRun(work("straight/checkpoint.h5"), work("split/checkpoint.h5")));
}

TEST_F(DistributedCli, RefusesChunkCountsThatCannotBeShared) {
  // One chunk cannot be shared by two processes: one line, from process 0 alone.
  const Args args = concat(lenet("lsq", "1"), {"--epochs", "1", "--out", work("x")});
  const RunResult r = mpirun(2, args, "one_chunk");
  EXPECT_FALSE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_NE(r.err.find("qatlab qat: --grad-chunks 1 is fewer than the 2 processes"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("qatlab qat:"), r.err.rfind("qatlab qat:")) << r.err;
  // Histogram observers need every value of the batch.
  EXPECT_TRUE(FailedWith(qatlab(concat(lenet("observer"), {"--epochs", "1", "--observer", "histogram", "--out", work("h")}),
                                "histogram"),
                         kUsageError, "qat", {"the histogram observer cannot combine the chunks of a batch yet"}));
}

// A distributed sweep (cells served to the processes as they free up, the float model trained by process 0)
// writes the results.csv of the sweep in one process, on three processes and on two; run again, it reuses
// every cell.
TEST_F(DistributedCli, SweepOnThreeAndTwoProcessesWritesTheResultsOfOne) {
  const Args args{"sweep",         "--data-dir", data_dir_, "--model",   "mlp",   "--float-epochs", "1",
                  "--pairs",       "8/8,4/4",    "--methods", "ptq-minmax,qat-minmax,lsq", "--seeds", "1",
                  "--qat-epochs",  "1",          "--calib-batches", "2", "--batch-size", "32", "--threads", "1"};
  // Paths of one length: the float checkpoint records its --out, and its size is in results.csv.
  const RunResult one = qatlab(concat(args, {"--out", work("solo")}), "one");
  ASSERT_TRUE(Succeeded(one));
  const RunResult three = mpirun(3, concat(args, {"--out", work("trio")}), "three");
  ASSERT_TRUE(Succeeded(three));
  EXPECT_NE(three.out.find("sweep finished: 6 cells run, 0 reused, 0 failed"), std::string::npos) << three.out;
  EXPECT_EQ(three.out.find("sweep finished"), three.out.rfind("sweep finished")) << "process 0 alone reports";
  const std::string expected = read_text(work("solo/results.csv"));
  EXPECT_NE(expected.find("lsq,per-tensor,4,4,1,0,"), std::string::npos) << expected;
  EXPECT_EQ(read_text(work("trio/results.csv")), expected);
  EXPECT_TRUE(fs::exists(work("trio/accuracy_vs_bits.svg")));

  // Two processes from scratch (paths of the same length again).
  const RunResult two = mpirun(2, concat(args, {"--out", work("duos")}), "two");
  ASSERT_TRUE(Succeeded(two));
  EXPECT_NE(two.out.find("sweep finished: 6 cells run, 0 reused, 0 failed"), std::string::npos) << two.out;
  EXPECT_EQ(read_text(work("duos/results.csv")), expected);

  const RunResult again = mpirun(2, concat(args, {"--out", work("trio")}), "again");
  ASSERT_TRUE(Succeeded(again));
  EXPECT_NE(again.out.find("sweep finished: 0 cells run, 6 reused, 0 failed"), std::string::npos) << again.out;
  EXPECT_EQ(read_text(work("trio/results.csv")), expected);
}

// The processes mpirun started for a run whose mpirun has this pid, by rank (read from their environment).
std::map<int, pid_t> ranks_of(pid_t launcher) {
  std::map<int, pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  while (const dirent* e = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    pid_t parent = 0;
    fields >> state >> parent;
    if (parent != launcher) continue;
    const std::string env = read_text("/proc/" + std::to_string(pid) + "/environ");
    const std::string key = std::string("OMPI_COMM_WORLD_RANK=") ;
    for (size_t at = 0; at < env.size(); at = env.find('\0', at) + 1) {
      if (env.compare(at, key.size(), key) == 0) out[std::atoi(env.c_str() + at + key.size())] = pid;
      if (env.find('\0', at) == std::string::npos) break;
    }
  }
  ::closedir(proc);
  return out;
}

TEST_F(DistributedCli, AKilledProcessEndsTheRunAndTheCheckpointResumesToTheSameResult) {
  const Args args = concat(lenet(), {"--epochs", "30"});
  ASSERT_TRUE(Succeeded(qatlab(concat(args, {"--out", work("straight")}), "straight")));

  const std::string out = work("killed.out"), err = work("killed.err"), ckpt = work("killed/checkpoint.h5");
  const Args launch = concat({"-np", "2", "--oversubscribe", "--allow-run-as-root", kQatlab},
                             concat(args, {"--out", work("killed")}));
  const pid_t launcher = spawn_program("mpirun", launch, out, err);
  // Wait for the first checkpoint, then kill process 1 in the middle of a later epoch.
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(ckpt) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::map<int, pid_t> ranks = ranks_of(launcher);
  ASSERT_EQ(ranks.count(1), 1u) << "process 1 of the run not found";
  ASSERT_EQ(::kill(ranks.at(1), SIGKILL), 0);
  const RunResult r = wait_qatlab(launcher, out, err, "mpirun " + join_command(launch));
  EXPECT_FALSE(r.exited && r.exit_code == 0) << r.describe();
  EXPECT_NE(r.err.find("rank 1"), std::string::npos) << r.describe();
  const Checkpoint saved = load_checkpoint(ckpt);  // intact
  ASSERT_GE(saved.epoch, 1);
  ASSERT_LT(saved.epoch, 30) << "the kill came too late to test anything";

  const Args resume{"qat", "--resume", ckpt, "--threads", "1", "--progress", "none", "--data-dir", data_dir_};
  ASSERT_TRUE(Succeeded(qatlab(resume, "resume")));
  EXPECT_TRUE(SameRun(work("straight/checkpoint.h5"), ckpt));
}

}  // namespace
}  // namespace qatlab::testing
