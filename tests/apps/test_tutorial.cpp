// test_tutorial.cpp: quant/TUTORIAL.md is what quant/teach/tutorial/make_tutorial.sh writes from its template,
// so neither its commands nor their output can drift from what qatlab does.
//
// The tutorial is generated on MNIST. Where MNIST is at hand ($QATLAB_DATA_DIR or ~/.cache/qatlab) and the
// CPU runs the integer kernels the file was made with, the script's output must equal the file byte for
// byte: the float training is reproducible run after run (one thread, fixed seeds) but, built with
// -march=native, only on the same kind of CPU. Elsewhere the script runs on the synthetic MNIST-format set
// of cli_harness.h: every command must still succeed and the file's prose and commands (every line but the
// commands' output) must be the script's.
#include <gtest/gtest.h>

#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "quant/engine/int8_gemm.h"
#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

const fs::path kRoot = fs::path(__FILE__).parent_path().parent_path().parent_path();

// Runs the generator with QATLAB_DATA_DIR = data_root; returns its exit status and leaves the tutorial in out.
int generate(const std::string& data_root, const std::string& out, const std::string& log) {
  const std::string cmd = "QATLAB_DATA_DIR='" + data_root + "' OMP_WAIT_POLICY=PASSIVE bash '" +
                          (kRoot / "quant/teach/tutorial/make_tutorial.sh").string() + "' '" + kQatlab + "' '" +
                          (kRoot / "quant/teach/tutorial/TUTORIAL.md.in").string() + "' '" + out + "' > '" + log + "' 2>&1";
  return std::system(cmd.c_str());
}

// The text without the commands' output: a fenced block that starts with "$ COMMAND" keeps its fences and
// that line. The kernel path named in the introduction is the machine's, so it is left out too.
std::string structure(const std::string& text) {
  const std::vector<std::string> lines = split_lines(text);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    out += std::regex_replace(lines[i], std::regex("kernels: [a-z0-9]+ here"), "kernels: K here") + "\n";
    if (lines[i] == "```" && i + 1 < lines.size() && lines[i + 1].rfind("$ ", 0) == 0) {
      out += lines[++i] + "\n";
      while (i + 1 < lines.size() && lines[i + 1] != "```") ++i;
    }
  }
  return out;
}

std::string mnist_root() {
  const char* env = std::getenv("QATLAB_DATA_DIR");
  const char* home = std::getenv("HOME");
  const std::string root = env ? env : home ? std::string(home) + "/.cache/qatlab" : "";
  if (root.empty()) return "";
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte"})
    if (!fs::exists(root + "/mnist/" + f) && !fs::exists(root + "/mnist/" + f + std::string(".gz"))) return "";
  return root;
}

TEST(Tutorial, CommittedFileIsWhatTheGeneratorWrites) {
  const std::string committed = read_text((kRoot / "quant/TUTORIAL.md").string());
  ASSERT_FALSE(committed.empty()) << "quant/TUTORIAL.md is missing";
  TempDir dir("tutorial");
  const std::string out = dir / "TUTORIAL.md", log = dir / "log.txt";
  const std::string mnist = mnist_root();
  const std::string kernels = std::string("kernels: ") + kernel_path_name(best_kernel_path()) + " here";
  if (!mnist.empty() && committed.find(kernels) != std::string::npos) {
    ASSERT_EQ(generate(mnist, out, log), 0) << read_text(log);
    if (read_text(out) != committed) {
      const std::string diff = dir / "diff.txt";
      std::system(("diff '" + (kRoot / "quant/TUTORIAL.md").string() + "' '" + out + "' | head -n 40 > '" + diff + "'").c_str());
      ADD_FAILURE() << "quant/TUTORIAL.md is not what the generator writes: edit quant/teach/tutorial/TUTORIAL.md.in and "
                       "run bash quant/teach/tutorial/make_tutorial.sh build/apps/qatlab\n"
                    << read_text(diff);
    }
    return;
  }
  // No MNIST here, or another kind of CPU: the same commands on the synthetic set.
  write_synthetic_mnist(dir / "data/mnist", 1000, 200, /*seed=*/5);
  ASSERT_EQ(generate(dir / "data", out, log), 0) << read_text(log);
  EXPECT_EQ(structure(read_text(out)), structure(committed));
}

TEST(Tutorial, StructureKeepsCommandsAndDropsOutput) {
  const std::string text = "# t\n\n```sh\nbash x\n```\n\n```\n$ qatlab eval m\naccuracy 9\nmore\n```\nafter\n";
  EXPECT_EQ(structure(text), "# t\n\n```sh\nbash x\n```\n\n```\n$ qatlab eval m\n```\nafter\n");
  EXPECT_NE(structure(text), structure("# t\n\n```sh\nbash y\n```\n\n```\n$ qatlab eval m\naccuracy 9\n```\nafter\n"));
  EXPECT_EQ(structure("on a CPU with the same kernels: avx2 here\n"), structure("on a CPU with the same kernels: portable here\n"));
}

}  // namespace
}  // namespace qatlab::testing
