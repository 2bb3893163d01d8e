// test_inspect_cli.cpp: `qatlab inspect` end to end on a synthetic MNIST-format set: the report of a QAT
// and of a PTQ checkpoint (every layer, finite SQNR, convert's multipliers), the --dot and --hist files and
// their overwrite guard, an integer model file, and one-line refusals with exit code 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "quant/engine/int8_graph.h"
#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

const std::vector<std::string> kLenetRows = {"input_quant",       "body.features.0",   "body.features.4",
                                             "body.classifier.0", "body.classifier.2", "body.classifier.4"};

Args concat(Args a, const Args& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Exit code 2 and exactly one stderr line "qatlab inspect: ..." holding every needle.
::testing::AssertionResult RefusedWith(const RunResult& r, std::initializer_list<std::string> needles) {
  if (!r.exited || r.exit_code != kUsageError)
    return ::testing::AssertionFailure() << "expected exit code 2\n" << r.describe();
  const std::vector<std::string> lines = split_lines(r.err);
  if (lines.size() != 1 || lines[0].rfind("qatlab inspect: ", 0) != 0)
    return ::testing::AssertionFailure() << "expected one 'qatlab inspect: ' line\n" << r.describe();
  for (const std::string& n : needles)
    if (lines[0].find(n) == std::string::npos) return ::testing::AssertionFailure() << "stderr lacks '" << n << "'\n" << r.describe();
  return ::testing::AssertionSuccess();
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
  return n;
}

// The line of `table_title`'s table that starts with the row name (tables are indented by two spaces).
std::string table_row(const std::string& out, const std::string& table_title, const std::string& name) {
  const size_t start = out.find(table_title);
  if (start == std::string::npos) return "";
  for (const std::string& line : split_lines(out.substr(start)))
    if (line.rfind("  " + name + " ", 0) == 0) return line;
  return "";
}

class InspectCli : public CliSuite {
 protected:
  // One float LeNet-5, its 4-bit QAT fine-tune and integer model, shared by every test of the process.
  static void SetUpTestSuite() {
    set_up_suite("inspect", 256, 64, /*seed=*/7);
    const fs::path logs = suite_dir_->path();
    const Args common{"--data-dir", data_dir_, "--threads", "2", "--progress", "none", "--epochs", "1", "--batch-size", "32"};
    float_ = *suite_dir_ / "float";
    qat_ = *suite_dir_ / "qat";
    const RunResult train = run_qatlab(concat({"train", "--model", "lenet5", "--out", float_}, common), logs, "train");
    if (!train.exited || train.exit_code != 0) throw std::runtime_error("training failed\n" + train.describe());
    const RunResult qat = run_qatlab(concat({"qat", "--from", float_ + "/checkpoint.h5", "--out", qat_, "--wbits", "4",
                                             "--train-limit", "128", "--lr", "0.01"},
                                            common),
                                     logs, "qat");
    if (!qat.exited || qat.exit_code != 0) throw std::runtime_error("qat failed\n" + qat.describe());
    const RunResult conv = run_qatlab({"convert", qat_ + "/checkpoint.h5"}, logs, "convert");
    if (!conv.exited || conv.exit_code != 0) throw std::runtime_error("convert failed\n" + conv.describe());
  }
  static void TearDownTestSuite() { tear_down_suite(); }

  // `qatlab inspect` on the QAT checkpoint over two batches of 16 test images, plus `extra`.
  RunResult inspect(const Args& extra, const std::string& tag = "inspect") {
    return qatlab(concat({"inspect", qat_ + "/checkpoint.h5", "--data-dir", data_dir_, "--threads", "2", "--batches", "2",
                          "--batch-size", "16"},
                         extra),
                  tag);
  }

  static inline std::string float_, qat_;
};

TEST_F(InspectCli, ReportsEveryLayerWithFiniteSqnrAndConvertsMultipliers) {
  const RunResult r = inspect({});
  ASSERT_TRUE(Succeeded(r));
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("(qat lenet5, epoch 1) on the first 32 mnist test images"), std::string::npos) << r.out;
  for (const std::string& name : kLenetRows) {
    const std::string line = table_row(r.out, "Ranges and SQNR", name);
    ASSERT_FALSE(line.empty()) << name << "\n" << r.out;
    const std::string last = line.substr(line.find_last_of(' ') + 1);
    const double db = std::stod(last);  // a number: not "n/a", not "exact"
    EXPECT_TRUE(std::isfinite(db)) << line;
    EXPECT_GT(db, 5.0) << line;
  }
  // 4-bit weights, 8-bit activations; the multipliers and shifts are the integer file's.
  EXPECT_NE(table_row(r.out, "Quantizers", "body.features.0").find("4:8"), std::string::npos) << r.out;
  const Int8Graph graph = Int8Graph::load(qat_ + "/model.int8.h5");
  int checked = 0;
  for (const Int8Op& op : graph.ops) {
    if (op.kind != Int8OpKind::Conv2d && op.kind != Int8OpKind::FullyConnected) continue;
    const auto& m = op.layer.is_conv ? op.layer.conv.output_multiplier : op.layer.fc.output_multiplier;
    const auto& s = op.layer.is_conv ? op.layer.conv.output_shift : op.layer.fc.output_shift;
    const auto [mlo, mhi] = std::minmax_element(m.begin(), m.end());
    const auto [slo, shi] = std::minmax_element(s.begin(), s.end());
    const std::string mult = *mlo == *mhi ? std::to_string(*mlo) : std::to_string(*mlo) + ".." + std::to_string(*mhi);
    const std::string shift = *slo == *shi ? std::to_string(*slo) : std::to_string(*slo) + ".." + std::to_string(*shi);
    const std::string line = table_row(r.out, "Grids and integer", op.name);
    EXPECT_NE(line.find(" " + mult + " "), std::string::npos) << op.name << ": " << line;
    EXPECT_NE(line.find(" " + shift), std::string::npos) << op.name << ": " << line;
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

TEST_F(InspectCli, WritesDotAndHistogramsAndNeverOverwritesWithoutAsking) {
  const std::string dot = work("model.dot"), hist = work("conv1.svg");
  ASSERT_TRUE(Succeeded(inspect({"--dot", dot, "--hist", "body.features.0", "--out", hist}, "files")));
  const std::string graph = read_text(dot);
  EXPECT_EQ(graph.rfind("digraph", 0), 0u);
  EXPECT_EQ(count(graph, "class=\"fake_quant\""), 11u);  // the input, and the weights and output of 5 layers
  EXPECT_NE(graph.find("body.features.0.weight_quant\\n"), std::string::npos);
  const std::string svg = read_text(hist);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("(largest scale), 4-bit per-channel symmetric grid"), std::string::npos);
  EXPECT_EQ(count(svg, "<rect class=\"bar\""), 100u);
  EXPECT_EQ(count(svg, "<line class=\"level\""), 15u);  // 4-bit narrow codes -7..7

  // Both files exist now: a second run refuses before doing anything and leaves them alone.
  write_text(dot, "mine");
  EXPECT_TRUE(RefusedWith(inspect({"--dot", dot}, "again"), {"--dot " + dot, "already exists", "--overwrite"}));
  EXPECT_TRUE(RefusedWith(inspect({"--hist", "body.features.0", "--out", hist}, "again-hist"), {"--out", "--overwrite"}));
  EXPECT_EQ(read_text(dot), "mine");
  EXPECT_EQ(read_text(hist), svg);
  ASSERT_TRUE(Succeeded(inspect({"--dot", dot, "--overwrite"}, "overwrite")));
  EXPECT_EQ(read_text(dot), graph);

  // Activations of a layer, channel chosen for weights, bins.
  const std::string act = work("logits.svg"), ch = work("ch2.svg");
  ASSERT_TRUE(Succeeded(inspect({"--hist", "body.classifier.4", "--activations", "--bins", "20", "--out", act}, "act")));
  const std::string a = read_text(act);
  EXPECT_EQ(count(a, "<rect class=\"bar\""), 20u);
  EXPECT_NE(a.find("body.classifier.4 output of the float model over 32 images, 8-bit per-tensor affine grid"),
            std::string::npos);
  ASSERT_TRUE(Succeeded(inspect({"--hist", "body.features.4", "--channel", "2", "--out", ch}, "channel")));
  EXPECT_NE(read_text(ch).find("channel 2 of 16,"), std::string::npos);
}

TEST_F(InspectCli, RefusesBadRequestsInOneLine) {
  const std::string out = work("x.svg");
  EXPECT_TRUE(RefusedWith(qatlab({"inspect", float_ + "/checkpoint.h5", "--data-dir", data_dir_}, "float"),
                          {"'float' checkpoint", "qatlab qat --from " + float_ + "/checkpoint.h5", "qatlab ptq"}));
  EXPECT_TRUE(RefusedWith(inspect({"--hist", "conv1", "--out", out}, "unknown"),
                          {"no layer 'conv1'", "input_quant, body.features.0, body.features.4"}));
  EXPECT_TRUE(RefusedWith(inspect({"--hist", "body.features.0"}, "no-out"), {"--hist needs --out"}));
  EXPECT_TRUE(RefusedWith(inspect({"--out", out}, "no-hist"), {"--out", "--hist LAYER"}));
  EXPECT_TRUE(RefusedWith(inspect({"--activations"}, "act-alone"), {"--activations", "--hist"}));
  EXPECT_TRUE(RefusedWith(inspect({"--hist", "input_quant", "--out", out}, "no-weights"), {"no weights", "--activations"}));
  EXPECT_TRUE(RefusedWith(inspect({"--hist", "body.features.0", "--channel", "6", "--out", out}, "channel"),
                          {"--channel 6", "6 output channels"}));
  EXPECT_TRUE(RefusedWith(inspect({"--hist", "body.features.0", "--activations", "--channel", "1", "--out", out}, "both"),
                          {"--channel"}));
  EXPECT_TRUE(RefusedWith(qatlab({"inspect", qat_ + "/checkpoint.h5", "--batches", "0"}, "batches"), {"--batches must be in 1..100000, got 0"}));
  EXPECT_TRUE(RefusedWith(qatlab({"inspect", qat_ + "/model.int8.h5", "--hist", "body.features.0", "--out", out}, "int8-hist"),
                          {"integer model file"}));
  EXPECT_FALSE(fs::exists(out));
  const RunResult missing = qatlab({"inspect", work("nothing.h5")}, "missing");
  EXPECT_TRUE(missing.exited && missing.exit_code == 1) << missing.describe();
  EXPECT_EQ(split_lines(missing.err).size(), 1u) << missing.describe();
}

TEST_F(InspectCli, DescribesAnIntegerModelFile) {
  const RunResult r = qatlab({"inspect", qat_ + "/model.int8.h5"}, "int8");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("integer model: input (1, 28, 28), 10 ops"), std::string::npos) << r.out;
  std::string conv1;
  for (const std::string& line : split_lines(r.out))
    if (line.find(" conv2d ") != std::string::npos && line.find(" body.features.0 ") != std::string::npos) conv1 = line;
  EXPECT_NE(conv1.find("(1, 6, 28, 28)"), std::string::npos) << r.out;
  EXPECT_NE(conv1.find("4:8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(1, 16, 5, 5)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("output_multiplier"), std::string::npos);
  EXPECT_EQ(r.out.find("SQNR dB"), std::string::npos);
}

TEST_F(InspectCli, DrawsTheIntegerGraphOfAnIntegerModelFile) {
  const std::string dot = work("int8.dot");
  const RunResult r = qatlab({"inspect", qat_ + "/model.int8.h5", "--dot", dot}, "int8-dot");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("integer graph with its slots: " + dot), std::string::npos) << r.out;
  const std::string text = read_text(dot);
  EXPECT_EQ(text.rfind("digraph int8_graph {", 0), 0u) << text;
  EXPECT_NE(text.find("\n}\n"), std::string::npos);
  // LeNet-5: quantize, conv, max pool, conv, max pool, flatten, 3 fully connected, dequantize; each op
  // writes one slot, numbered from 1.
  EXPECT_EQ(count(text, "class=\"op\""), 10u) << text;
  EXPECT_EQ(count(text, "class=\"slot\""), 10u) << text;
  EXPECT_EQ(text.find("slot0"), std::string::npos) << text;
  const Int8Graph graph = Int8Graph::load(qat_ + "/model.int8.h5");
  const Int8Op& conv1 = graph.ops[1];
  ASSERT_EQ(conv1.kind, Int8OpKind::Conv2d);
  for (const std::string& part :
       {std::string("#0 quantize"), std::string("#1 conv2d\\nbody.features.0"), std::string("weights (6, 1, 5, 5), 4-bit, scale "),
        std::string("output_multiplier ") + std::to_string(*std::min_element(conv1.layer.conv.output_multiplier.begin(),
                                                                             conv1.layer.conv.output_multiplier.end())),
        std::string("slot 2\\n(1, 6, 28, 28)\\n8-bit, scale "), std::string("(1, 16, 5, 5)"), std::string("#9 dequantize"),
        std::string("slot1 -> op1"), std::string("op1 -> slot2"), std::string("float = ")})
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
  // Graphviz itself, when the machine has it, accepts the file.
  if (std::system("command -v dot > /dev/null 2>&1") == 0) {
    EXPECT_EQ(std::system(("dot -Tsvg '" + dot + "' -o '" + work("int8.svg") + "'").c_str()), 0);
  }
}

TEST_F(InspectCli, PlotsEachLayersSqnrAgainstTheBitWidthOfPtq) {
  const std::string svg = work("sqnr.svg");
  const RunResult r = qatlab({"inspect", float_ + "/checkpoint.h5", "--sqnr-vs-bits", svg, "--data-dir", data_dir_,
                              "--threads", "2", "--batches", "2", "--batch-size", "16"},
                             "sqnr");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("calibrated on 32 training images; measured on the first 32 mnist test images"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("W8A8  W6A6  W4A4  W3A3  W2A2"), std::string::npos) << r.out;
  for (const std::string& name : kLenetRows) {
    std::vector<double> db;
    for (const std::string& line : split_lines(r.out))
      if (line.rfind("  " + name + " ", 0) == 0) {
        std::istringstream in(line.substr(name.size() + 2));
        double v;
        while (in >> v) db.push_back(v);
      }
    ASSERT_EQ(db.size(), 5u) << name << "\n" << r.out;
    if (name == "input_quant") {  // the model input stays at 8 bits
      for (const double v : db) EXPECT_EQ(v, db[0]) << r.out;
      continue;
    }
    // Two bits more or less are ~12 dB of SQNR; at the least, 8 bits beat 4 by 6 dB and 4 beat 2.
    EXPECT_GT(db[0], db[2] + 6) << name << "\n" << r.out;
    EXPECT_GT(db[2], db[4]) << name << "\n" << r.out;
  }
  const std::string plot = read_text(svg);
  EXPECT_EQ(plot.rfind("<?xml", 0), 0u);
  EXPECT_EQ(count(plot, "<polyline class=\"series\""), kLenetRows.size());
  EXPECT_NE(plot.find("SQNR per layer after PTQ"), std::string::npos);
  EXPECT_NE(plot.find("body.classifier.4"), std::string::npos);

  EXPECT_TRUE(RefusedWith(inspect({"--sqnr-vs-bits", work("q.svg")}, "sqnr-qat"), {"'qat' checkpoint", "float checkpoint"}));
  EXPECT_TRUE(RefusedWith(qatlab({"inspect", float_ + "/checkpoint.h5", "--sqnr-vs-bits", svg, "--data-dir", data_dir_},
                                 "sqnr-again"),
                          {"--sqnr-vs-bits", "--overwrite"}));
  EXPECT_EQ(read_text(svg), plot);
  EXPECT_FALSE(fs::exists(work("q.svg")));
}

TEST_F(InspectCli, ExplainsOneLstmStepOfAnLstmRowsModel) {
  const std::string fl = work("lstm"), qat = work("lstm-qat");
  const Args common{"--data-dir", data_dir_, "--threads", "2", "--progress", "none", "--epochs", "1", "--batch-size", "32"};
  ASSERT_TRUE(Succeeded(qatlab(concat({"train", "--model", "lstm-rows", "--train-limit", "128", "--out", fl}, common), "train")));
  ASSERT_TRUE(Succeeded(qatlab(concat({"qat", "--from", fl + "/checkpoint.h5", "--train-limit", "64", "--out", qat}, common), "qat")));
  const RunResult r = qatlab({"inspect", qat + "/checkpoint.h5", "--data-dir", data_dir_, "--threads", "2", "--explain",
                              "body.lstm", "--at", "7,20,0", "--image", "3"},
                             "explain-lstm");
  ASSERT_TRUE(Succeeded(r));
  for (const char* part : {"test image 3", "integer LSTM, input (1, 28, 28)", "hidden unit 7 at step 20", "gate o (output gate",
                           "c_{t-1}", "carried from step 19", "hidden_multiplier", "The integer graph computed code",
                           "the same.", "21 of 21 equal the graph's codes"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << "\n" << r.out;
  EXPECT_EQ(r.out.find("Batch-norm folding"), std::string::npos);
  EXPECT_TRUE(RefusedWith(qatlab({"inspect", qat + "/checkpoint.h5", "--data-dir", data_dir_, "--explain", "body.lstm",
                                  "--at", "7,28,0"},
                                 "explain-lstm-step"),
                          {"outside", "step in 0..27"}));
}

TEST_F(InspectCli, InspectsAPtqCheckpoint) {
  const std::string ptq = work("ptq");
  ASSERT_TRUE(Succeeded(qatlab({"ptq", float_ + "/checkpoint.h5", "--data-dir", data_dir_, "--threads", "2", "--wbits", "8",
                                "--abits", "4", "--calib-batches", "2", "--batch-size", "16", "--test-limit", "32", "--out",
                                ptq},
                               "ptq")));
  const RunResult r = qatlab({"inspect", ptq + "/checkpoint.h5", "--data-dir", data_dir_, "--threads", "2", "--batches", "1",
                              "--batch-size", "16"},
                             "inspect-ptq");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(table_row(r.out, "Quantizers", "body.classifier.0").find("8:4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("on the first 16 mnist test images"), std::string::npos) << r.out;
}

TEST_F(InspectCli, ExplainsOneOutputStepByStepForCheckpointAndIntegerFile) {
  for (const std::string& model : {qat_ + "/checkpoint.h5", qat_ + "/model.int8.h5"}) {
    const RunResult r = qatlab({"inspect", model, "--data-dir", data_dir_, "--explain", "body.features.4", "--at", "3,2,1",
                                "--image", "5", "--threads", "2"},
                               "explain");
    ASSERT_TRUE(Succeeded(r));
    for (const char* part : {"test image 5", "channel 3, y 2, x 1", "accumulator acc", "output_multiplier",
                             "The integer graph computed code", "the same."})
      EXPECT_NE(r.out.find(part), std::string::npos) << part << "\n" << r.out;
    // The checkpoint also shows how channel 3's integers came from the batch norm; the file cannot.
    const bool checkpoint = model.find("checkpoint.h5") != std::string::npos;
    for (const char* part : {"Batch-norm folding", "output channel 3", "sigma = sqrt(running_var + eps)",
                             "weight codes of this channel equal to convert's: 150 of 150",
                             "the folding gives convert's integers exactly."})
      EXPECT_EQ(r.out.find(part) != std::string::npos, checkpoint) << part << "\n" << r.out;
    EXPECT_EQ(r.out.find("keeps no float parameters") != std::string::npos, !checkpoint) << r.out;
  }
  // --terms 0: every product of the sum and every folded weight listed (150 each, plus the two headers).
  const RunResult all = qatlab({"inspect", qat_ + "/checkpoint.h5", "--data-dir", data_dir_, "--explain", "body.features.4",
                                "--at", "3,2,1", "--terms", "0", "--threads", "2"},
                               "explain-all");
  ASSERT_TRUE(Succeeded(all));
  EXPECT_EQ(all.out.find("the first"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("over 150 terms:\n"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("; all 150:\n"), std::string::npos) << all.out;
  size_t rows = 0;
  for (const std::string& line : split_lines(all.out)) rows += line.find(" | ") != std::string::npos;
  EXPECT_EQ(rows, 302u) << all.out;
  EXPECT_TRUE(RefusedWith(inspect({"--explain", "body.features.4", "--terms", "-1"}, "explain-terms"), {"--terms must be >= 0"}));
  EXPECT_TRUE(RefusedWith(inspect({"--explain", "body.features.9"}, "explain-layer"), {"body.features.4"}));
  EXPECT_TRUE(RefusedWith(inspect({"--explain", "body.features.4", "--at", "2,x"}, "explain-at"), {"--at"}));
  EXPECT_TRUE(RefusedWith(inspect({"--explain", "body.features.4", "--at", "99"}, "explain-range"), {"outside"}));
  EXPECT_TRUE(RefusedWith(inspect({"--at", "1"}, "at-alone"), {"--explain"}));
}

}  // namespace
}  // namespace qatlab::testing
