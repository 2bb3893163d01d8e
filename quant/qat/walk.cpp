// walk.cpp: the walker, its three walks, and the rules of the nn/ modules that stay in a QAT model.
#include "quant/qat/walk.h"

#include <algorithm>
#include <stdexcept>

#include "nn/activation.h"
#include "nn/sequence_models.h"
#include "quant/qat/fake_quantize.h"

namespace qatlab {

struct FloatNodeRule {
  void (*lower)(const Module& m, Lowering& walk, const std::string& name);
  void (*describe)(const Module& m, Description& walk, const std::string& name);
  Tensor (*record)(Module& m, Recording& walk, const std::string& name, const Tensor& x);
};

namespace {

// ------------------------------------------------------------------------------- rules of nn/ modules

// Op `kind` on the current activation, which keeps its grid.
Int8Op op_named(Int8OpKind kind, const std::string& name) {
  Int8Op op;
  op.kind = kind;
  op.name = name;
  return op;
}

void walk_children_lower(const Module& m, Lowering& w, const std::string& name) { w.walk_children(m, name); }
void walk_children_describe(const Module& m, Description& w, const std::string& name) { w.walk_children(m, name); }
Tensor record_children(Module& m, Recording& r, const std::string& name, const Tensor& x) {
  Tensor y = x;
  for (const auto& [child, sub] : m.children()) y = r.run(*sub, ModelWalk::child_name(name, child), y);
  return y;
}

// RowLstmClassifier: image rows (the codes rearranged, same grid), the LSTM, its last step, the head.
void lower_row_lstm(const Module& m, Lowering& w, const std::string& name) {
  w.emit(op_named(Int8OpKind::ImageRows, name), w.at.grid);
  w.walk(*m.child("lstm"), ModelWalk::child_name(name, "lstm"));
  w.emit(op_named(Int8OpKind::LastStep, name), w.at.grid);
  w.walk(*m.child("head"), ModelWalk::child_name(name, "head"));
}

void lower_max_pool(const Module& m, Lowering& w, const std::string& name) {
  const MaxPool2d& p = *m.as<MaxPool2d>();
  Int8Op op = op_named(Int8OpKind::MaxPool2d, name);
  op.kernel = p.kernel, op.stride = p.stride, op.pad = p.padding;
  w.emit(std::move(op), w.at.grid);
}

void lower_flatten(const Module& m, Lowering& w, const std::string& name) {
  w.emit(op_named(Int8OpKind::Flatten, name), w.at.grid);
}

// relu(s (q - z)) = s (max(q, z) - z): a clamp of the codes at the zero point.
void lower_relu(const Module& m, Lowering& w, const std::string& name) {
  Int8Op op = op_named(Int8OpKind::Clamp, name);
  op.clamp_min = std::max(w.at.grid.quant_min, w.at.grid.zero_point[0]);
  op.clamp_max = w.at.grid.quant_max;
  w.emit(std::move(op), w.at.grid);
}

void keep_grid(const Module& m, Description& w, const std::string& name) { w.keep(m, name, true); }

// Identity and dropout: nothing at inference.
void lower_nothing(const Module&, Lowering&, const std::string&) {}
void describe_nothing(const Module&, Description&, const std::string&) {}

template <class T>
bool is_a(const Module& m) {
  return m.is<T>();
}

struct FloatRuleEntry {
  bool (*matches)(const Module&);
  FloatNodeRule rule;
};

// The modules of nn/ that prepare_qat leaves in a QAT model. (Their QAT counterparts replace every other
// float module; a new QAT layer is a QatNode and needs nothing here.)
const FloatRuleEntry kFloatRules[] = {
    {is_a<Sequential>, {walk_children_lower, walk_children_describe, record_children}},
    // Its children run in order too ("lstm" on the image rows, "head" on its last step).
    {is_a<RowLstmClassifier>, {lower_row_lstm, walk_children_describe, nullptr}},
    {is_a<MaxPool2d>, {lower_max_pool, keep_grid, nullptr}},
    {is_a<Flatten>, {lower_flatten, keep_grid, nullptr}},
    {is_a<ReLU>, {lower_relu, keep_grid, nullptr}},
    {is_a<Identity>, {lower_nothing, describe_nothing, nullptr}},
    {is_a<Dropout>, {lower_nothing, describe_nothing, nullptr}},
};

const FloatNodeRule* float_node_rule(const Module& m) {
  for (const FloatRuleEntry& e : kFloatRules)
    if (e.matches(m)) return &e.rule;
  return nullptr;
}

// Whether a module below m (not m itself) is a quantizer.
bool holds_quantizers(const Module& m) {
  for (const auto& [name, child] : m.children())
    if (child->is<Quantizer>() || holds_quantizers(*child)) return true;
  return false;
}

}  // namespace

// ------------------------------------------------------------------------------------------ the walker

void ModelWalk::walk(const Module& m, const std::string& name) {
  if (const QatNode* node = m.as<QatNode>()) {
    visit(*node, name);
  } else if (const FloatNodeRule* rule = float_node_rule(m)) {
    visit(*rule, m, name);
  } else {
    unsupported(m, name);
  }
}

void ModelWalk::walk_children(const Module& m, const std::string& name) {
  for (const auto& [child, sub] : m.children()) walk(*sub, child_name(name, child));
}

std::pair<WalkPoint, WalkPoint> ModelWalk::walk_branches(const Module& first, const std::string& first_name,
                                                         const Module& second, const std::string& second_name) {
  const WalkPoint entry = at;
  walk(first, first_name);
  const WalkPoint first_end = at;
  at = entry;
  walk(second, second_name);
  return {first_end, at};
}

std::string ModelWalk::child_name(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

// -------------------------------------------------------------------------------------------- lowering

void Lowering::emit(Int8Op op, std::vector<int> inputs, const QParams& grid) {
  op.inputs = std::move(inputs);
  op.output = fresh_slot();
  at.slot = op.output;
  at.grid = grid;
  graph_.ops.push_back(std::move(op));
}

void Lowering::visit(const FloatNodeRule& rule, const Module& m, const std::string& name) { rule.lower(m, *this, name); }

void Lowering::unsupported(const Module& m, const std::string& name) {
  throw std::invalid_argument("convert: no integer form for " + m.type() + " '" + name + "'");
}

// ----------------------------------------------------------------------------------------- description

void Description::row(DescribedNode node, std::vector<int> inputs, const QParams& grid) {
  node.inputs = std::move(inputs);
  node.output = fresh_slot();
  at.slot = node.output;
  at.grid = grid;
  nodes.push_back(std::move(node));
}

void Description::keep(const Module& m, const std::string& name, bool keeps_grid) {
  DescribedNode node;
  node.kind = DescribedNode::Kind::Keep;
  node.name = name;
  node.type = m.type();
  node.description = m.describe();
  node.keeps_grid = keeps_grid;
  const QParams grid = at.grid;
  row(std::move(node), {at.slot}, grid);
}

QParams Description::grid_of(const Quantizer& q) {
  try {
    return q.qparams();
  } catch (const std::logic_error&) {
    return QParams{};
  }
}

void Description::refuse(const Module& m, const std::string& name) {
  throw std::invalid_argument("cannot inspect " + name + " (" + m.type() +
                              "): it holds quantizers of its own; inspect covers conv, linear, pooling and residual "
                              "layers (convert the model and inspect the integer file instead)");
}

void Description::visit(const FloatNodeRule& rule, const Module& m, const std::string& name) {
  rule.describe(m, *this, name);
}

void Description::unsupported(const Module& m, const std::string& name) {
  if (holds_quantizers(m)) refuse(m, name);
  keep(m, name, false);
}

// ------------------------------------------------------------------------------------------- recording

Tensor Recording::run(Module& m, const std::string& name, const Tensor& x) {
  if (QatNode* node = m.as<QatNode>()) return node->record(*this, name, x);
  if (const FloatNodeRule* rule = float_node_rule(m); rule && rule->record) return rule->record(m, *this, name, x);
  return m.forward(x);
}

}  // namespace qatlab
