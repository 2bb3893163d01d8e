// main.cpp: the `qatlab` command: git-style subcommands, and the one place errors become exit codes.
//
// Exit codes: 0 success, 1 a failure while running (bad file, NaN loss, ...), 2 a usage error.
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/distributed.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Subcommand kSubcommands[] = {
    {"train", qatlab::cmd_train, "train a float model (or resume a run)"},
    {"eval", qatlab::cmd_eval, "evaluate a float, QAT or integer model on a dataset's test split"},
    {"info", qatlab::cmd_info, "show a checkpoint's model, parameters, metadata and history"},
    {"qat", qatlab::cmd_qat, "quantization-aware training from a float checkpoint or from scratch"},
    {"ptq", qatlab::cmd_ptq, "post-training quantization: calibrate a float model, convert, evaluate"},
    {"convert", qatlab::cmd_convert, "turn a QAT checkpoint into an integer-only model file"},
    {"sweep", qatlab::cmd_sweep, "accuracy vs bit width: PTQ and QAT methods over W/A pairs and seeds, CSV/JSON/plot"},
    {"inspect", qatlab::cmd_inspect, "per layer: grids, integer multipliers, ranges, SQNR vs float; --dot graph, --hist plot"},
    {"export", qatlab::cmd_export, "write an integer model file as an ONNX model (ONNX Runtime runs it in integer)"},
    {"import", qatlab::cmd_import, "read a float ONNX model into a float checkpoint (for qat, ptq, convert, ...)"},
    {"bench", qatlab::cmd_bench, "float vs integer model: latency, throughput, size, GEMM rate vs peak"},
    {"compare", qatlab::cmd_compare, "two runs' training curves side by side: means over ranges of epochs, A - B"},
    {"teacher-cache", qatlab::cmd_teacher_cache,
     "a distillation teacher's outputs for every crop and flip of every training image, computed once"},
};

void print_usage() {
  std::printf("usage: qatlab <command> [options]   (qatlab <command> --help for its options; qatlab --version)\n\ncommands:\n");
  for (const auto& c : kSubcommands) std::printf("  %-13s %s\n", c.name, c.summary);
}

}  // namespace

// OpenMP threads that wait at a barrier spin (GCC's default: 300,000 iterations, milliseconds) before
// sleeping. When another process keeps a core busy, the thread everyone waits for is descheduled while
// its team mates burn their time slices spinning: training ran 10 to 60 times slower on a loaded 2-core
// machine. Too short a spin costs the other way: a small network's step is many short parallel
// regions, and threads that went to sleep between them must be woken by the kernel each time.
// Measured with `bench --train lenet5` on the 2-core Xeon (QAT W8A8 images/s, idle / while another
// 2-thread training ran): 1,000 iterations 18.0k / 12.4k, 3,000 23.5k / 9.5k, 10,000 24.4k / 5.1k;
// ResNet-20 (large regions) is the same with each. 3,000 keeps most of the idle machine's speed and
// stays within 1.3x of the shortest spin on a loaded one. libgomp reads its settings before main(), so
// we set it and restart once; a user who sets OMP_WAIT_POLICY or GOMP_SPINCOUNT keeps their choice.
static void use_short_openmp_spin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  setenv("GOMP_SPINCOUNT", "3000", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run with the defaults
}

// Runs one subcommand and turns its errors into one line and an exit code. Under mpirun: an error every
// process met alike (a usage error, a CollectiveError) is printed by process 0 and each process ends on its
// own; any other error is one process's alone (a file it cannot read, a disk it cannot write), so it names
// its process and ends the whole run, whose other processes would otherwise wait for it forever.
static int run_subcommand(const Subcommand& c, int argc, char** argv) {
  using namespace qatlab;
  distributed_init(&argc, &argv);
  const bool several = world_size() > 1;
  // Process 0 speaks for the run: the others' output would repeat it (their errors still reach stderr).
  if (several && world_rank() != 0 && !std::freopen("/dev/null", "w", stdout))
    std::fprintf(stderr, "qatlab: process %d could not silence its output\n", world_rank());
  const std::string who =
      several ? " (process " + std::to_string(world_rank()) + " of " + std::to_string(world_size()) + ")" : "";
  int code = 0;
  try {
    // The others would each do the same work and write the same files.
    const std::string name = c.name;
    if (several && name != "train" && name != "qat" && name != "sweep")
      throw UsageError(name + " runs in one process: start it without mpirun (train, qat and sweep share work)");
    code = c.run(argc, argv);
  } catch (const UsageError& e) {
    if (world_rank() == 0) std::fprintf(stderr, "qatlab %s: %s\n", c.name, e.what());
    code = 2;
  } catch (const CollectiveError& e) {
    if (world_rank() == 0) std::fprintf(stderr, "qatlab %s: error: %s\n", c.name, e.what());
    code = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qatlab %s: error%s: %s\n", c.name, who.c_str(), e.what());
    std::fflush(stderr);
    abort_all(1);
    code = 1;
  }
  std::fflush(stdout);
  distributed_finalize();
  return code;
}

int main(int argc, char** argv) {
  use_short_openmp_spin(argv);
  // Training frees and reallocates the same large activation buffers every batch. Keep them in the
  // heap instead of returning them to the system each time (glibc would mmap/munmap them and pay
  // page faults on every batch).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);

  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "version")) {
    std::printf("qatlab %s\n", QATLAB_VERSION);  // CMake's project(VERSION ...)
    return 0;
  }
  for (const auto& c : kSubcommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    return run_subcommand(c, argc - 1, argv + 1);
  }
  std::fprintf(stderr, "qatlab: unknown command '%s'\n", argv[1]);
  print_usage();
  return 2;
}
