// test_walk.cpp: the one walk over a QAT model (walk.h). A QAT layer written in this file alone, with its
// prepare rule, is prepared, converted and inspected without a change anywhere else; convert's walk and
// inspect's see the very same grids.
#include "quant/qat/walk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/quant_test_util.h"
#include "quant/teach/inspect.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::conv_bn;
using test::random_input;
using test::simulation_codes;
using test::throws_with;

// ------------------------------------------------------------------- a new layer, in this file alone

// A float module nn/ does not have: max(x, 0), under a name of its own.
class PositivePart : public Module {
 public:
  PositivePart() : Module("PositivePart") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};

// Its QAT form. On its input's grid, max(s (q - z), 0) = s (max(q, z) - z): a clamp of the codes at the
// zero point, with no quantizer of its own.
class QatPositivePart : public QatNode {
 public:
  QatPositivePart() : QatNode("QatPositivePart") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string describe() const override { return "max(x, 0)"; }

  void lower(Lowering& walk, const std::string& name) const override {
    Int8Op op;
    op.kind = Int8OpKind::Clamp;
    op.name = name;
    op.clamp_min = std::max(walk.at.grid.quant_min, walk.at.grid.zero_point[0]);
    op.clamp_max = walk.at.grid.quant_max;
    walk.emit(std::move(op), walk.at.grid);
  }
  void describe_node(Description& walk, const std::string& name) const override { walk.keep(*this, name, true); }
  void set_exact(bool on, KernelPath path) override {}
};

PrepareRules rules_with_positive_part() {
  PrepareRules rules = PrepareRules::builtin();
  rules.add<PositivePart>([](Preparer&, const ModulePtr&, const std::vector<ModulePtr>&, const std::string&) {
    return PrepareStep{std::make_shared<QatPositivePart>()};
  });
  return rules;
}

QConfig bits(int w, int a) { return QConfig::from_options(w, a, true, "minmax", "minmax", {}); }

const Shape kImages{4, 2, 6, 6};  // (N, C, H, W)

// conv (no ReLU to fuse), the new layer, flatten, linear.
ModulePtr net_with_positive_part(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(2, 3, 3, Conv2dOptions{}, rng));
  m->add(std::make_shared<PositivePart>());
  m->add(std::make_shared<Flatten>());
  m->add(std::make_shared<Linear>(3 * 4 * 4, 5, true, rng));
  return m;
}

std::shared_ptr<QatModel> calibrate(std::shared_ptr<QatModel> model, Rng& rng) {
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_input(kImages, rng));
  }
  model->eval();
  return model;
}

TEST(Walk, ANewLayerWithItsRuleIsPreparedConvertedAndInspected) {
  Rng rng(3);
  // Without its rule prepare_qat does not know the module, and says which.
  EXPECT_TRUE(throws_with([&] { prepare_qat(net_with_positive_part(rng), bits(8, 8)); },
                          {"cannot quantize", "PositivePart", "'1'"}));

  const PrepareRules rules = rules_with_positive_part();
  auto model = calibrate(prepare_qat(net_with_positive_part(rng), bits(8, 8), rules), rng);
  ASSERT_TRUE(model->submodule("body.1")->is<QatPositivePart>());

  // convert: the new layer's clamp sits between the conv and the flatten, on the conv's output grid ...
  const Int8Graph graph = convert(*model, {2, 6, 6});
  std::vector<Int8OpKind> kinds;
  for (const Int8Op& op : graph.ops) kinds.push_back(op.kind);
  EXPECT_EQ(kinds, (std::vector<Int8OpKind>{Int8OpKind::Quantize, Int8OpKind::Conv2d, Int8OpKind::Clamp,
                                             Int8OpKind::Flatten, Int8OpKind::FullyConnected, Int8OpKind::Dequantize}));
  const Int8Op& clamp = graph.ops[2];
  EXPECT_EQ(clamp.name, "body.1");
  EXPECT_EQ(clamp.clamp_min, graph.ops[1].layer.output.zero_point[0]);
  EXPECT_EQ(graph.ops[4].layer.input.scale, graph.ops[1].layer.output.scale);
  // ... and the integer graph computes what the simulation computes in exact mode, bit for bit.
  const Tensor x = random_input(kImages, rng);
  Shape shape;
  EXPECT_EQ(graph.run_codes(x, &shape, KernelPath::Reference), simulation_codes(model, x, graph.output_grid(), true));

  // inspect: the rows of the layers around it, the new layer drawn as one that keeps its input's grid.
  EXPECT_EQ(inspectable_layers(*model), (std::vector<std::string>{"input_quant", "body.0", "body.3"}));
  const ModelReport report = inspect_model(model, {random_input(kImages, rng)});
  EXPECT_TRUE(report.layers[2].lowering_error.empty()) << report.layers[2].lowering_error;
  EXPECT_EQ(report.layers[2].output_multiplier, graph.ops[4].layer.fc.output_multiplier);
  const std::string dot = model_to_dot(*model);
  EXPECT_NE(dot.find("body.1\\nQatPositivePart max(x, 0)\\n(keeps its input's grid)"), std::string::npos) << dot;
}

TEST(Walk, ARuleAddedLaterReplacesABuiltInOne) {
  Rng rng(4);
  PrepareRules rules = PrepareRules::builtin();
  rules.add<ReLU>([](Preparer&, const ModulePtr&, const std::vector<ModulePtr>&, const std::string&) {
    return PrepareStep{std::make_shared<QatPositivePart>()};
  });
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<MaxPool2d>(2));  // nothing before the ReLU for it to be fused into
  net->add(std::make_shared<ReLU>());
  auto model = prepare_qat(net, bits(8, 8), rules);
  EXPECT_TRUE(model->submodule("body.1")->is<QatPositivePart>());
  EXPECT_TRUE(prepare_qat(net_with_positive_part(rng), bits(8, 8), rules_with_positive_part())->submodule("body.1")
                  ->is<QatPositivePart>());
}

// ----------------------------------------------------------------------------------- the grid tracking

// conv+BN+ReLU, max pool, a residual block with a projection shortcut and one with an identity shortcut,
// global pooling, linear.
ModulePtr residual_net(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(conv_bn(2, 6, 3, 1, true, rng));
  m->add(std::make_shared<MaxPool2d>(2));
  auto body = std::make_shared<Sequential>();
  body->add(conv_bn(6, 8, 3, 1, true, rng));
  body->add(conv_bn(8, 8, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body, conv_bn(6, 8, 1, 1, false, rng), true));
  auto body2 = std::make_shared<Sequential>();
  body2->add(conv_bn(8, 8, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body2, std::make_shared<Identity>(), false));
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(8, 5, true, rng));
  return m;
}

TEST(Walk, ConvertAndInspectSeeTheSameGrids) {
  Rng rng(5);
  auto model = calibrate(prepare_qat(residual_net(rng), bits(4, 8)), rng);
  const Int8Graph graph = convert(*model, {2, 6, 6});
  Description description;
  description.walk(*model, "");

  // Every op reads a slot on the grid the op that wrote it left there.
  std::vector<QParams> slot_grid(graph.num_slots);
  std::map<std::string, const Int8Op*> ops;
  for (const Int8Op& op : graph.ops) {
    switch (op.kind) {
      case Int8OpKind::Conv2d:
      case Int8OpKind::FullyConnected:
        EXPECT_EQ(op.layer.input.scale, slot_grid[op.inputs[0]].scale) << op.name;
        EXPECT_EQ(op.layer.input.zero_point, slot_grid[op.inputs[0]].zero_point) << op.name;
        slot_grid[op.output] = op.layer.output;
        ops[op.name] = &op;
        break;
      case Int8OpKind::Add:
      case Int8OpKind::Quantize:
      case Int8OpKind::Dequantize:
        slot_grid[op.output] = op.grid;
        ops[op.name] = &op;
        break;
      default:
        slot_grid[op.output] = slot_grid[op.inputs[0]];
    }
  }
  // The residual add with the identity shortcut reads the first block's sum.
  const Int8Op& add2 = *ops.at("body.3");
  EXPECT_EQ(add2.inputs[1], ops.at("body.2")->output);

  // The description's integers are convert's, row by row (the input row has none).
  size_t rows = 0;
  for (const DescribedNode& n : description.nodes) {
    if (n.kind == DescribedNode::Kind::Keep || n.kind == DescribedNode::Kind::Input) continue;
    ++rows;
    const Int8Op& op = *ops.at(n.name);
    EXPECT_TRUE(n.lowering_error.empty()) << n.name << ": " << n.lowering_error;
    if (n.kind == DescribedNode::Kind::Add) {
      EXPECT_EQ(n.output_multiplier, std::vector<int32_t>{op.add.output_multiplier}) << n.name;
      EXPECT_EQ(n.output_shift, std::vector<int>{op.add.output_shift}) << n.name;
    } else {
      const bool conv = n.kind == DescribedNode::Kind::Conv;
      EXPECT_EQ(n.output_multiplier, conv ? op.layer.conv.output_multiplier : op.layer.fc.output_multiplier) << n.name;
      EXPECT_EQ(n.output_shift, conv ? op.layer.conv.output_shift : op.layer.fc.output_shift) << n.name;
    }
  }
  EXPECT_EQ(rows, 8u);  // 5 convs, 1 linear, 2 adds
}

TEST(Walk, BranchesStartFromTheSameActivation) {
  Description walk;
  walk.at.slot = 3;
  walk.at.grid.scale = {0.5f};
  walk.at.grid.zero_point = {-3};
  const Identity identity;
  auto maxpool = std::make_shared<MaxPool2d>(2);
  const auto [first, second] = walk.walk_branches(*maxpool, "a", identity, "b");
  ASSERT_EQ(walk.nodes.size(), 1u);  // the pool's entry: it reads the entry's slot, writes a fresh one
  EXPECT_EQ(walk.nodes[0].inputs, std::vector<int>{3});
  EXPECT_EQ(first.slot, walk.nodes[0].output);
  EXPECT_EQ(second.slot, 3);  // identity: the entry's, as the second branch started there
  EXPECT_EQ(second.grid.zero_point[0], -3);
  EXPECT_EQ(ModelWalk::child_name("", "body"), "body");
  EXPECT_EQ(ModelWalk::child_name("body", "0"), "body.0");
}

TEST(Walk, ConvertNamesAModuleWithoutAnIntegerForm) {
  auto model = std::make_shared<QatModel>(std::make_shared<FakeQuantize>(QScheme{}), std::make_shared<Sequential>());
  auto body = std::static_pointer_cast<Sequential>(model->child("body"));
  body->add("odd", std::make_shared<PositivePart>());
  model->train();
  {
    NoGradGuard no_grad;
    Rng rng(7);
    model->forward(random_input({2, 1, 4, 4}, rng));
  }
  EXPECT_TRUE(throws_with([&] { convert(*model, {1, 4, 4}); }, {"no integer form", "PositivePart", "'body.odd'"}));
}

}  // namespace
}  // namespace qatlab
