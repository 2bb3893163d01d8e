// qat_layers.cpp: forward passes of the QAT modules: BN folding during training, the deployed form in
// evaluation, and the exact (integer) mode; how each lowers and describes itself (walk.h), and the rules
// prepare_qat builds them by (prepare_rules.h).
#include "quant/qat/qat_layers.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>

#include "core/parallel.h"
#include "core/round_odd.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "quant/qat/bias.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/lower.h"
#include "quant/qat/prepare_rules.h"
#include "quant/qat/walk.h"

namespace qatlab {

const char* activation_name(FusedActivation a) {
  switch (a) {
    case FusedActivation::None: return "none";
    case FusedActivation::ReLU: return "relu";
    case FusedActivation::ReLU6: return "relu6";
  }
  return "?";
}

// ------------------------------------------------------------------------------------------ QatLayer

namespace {

// The backward of an op whose output has x's shape and takes x's gradient unchanged.
BackwardFn straight_through_to(const Tensor& x) {
  return [x](const Tensor& g) {
    Tensor input = x;
    float* gx = input.mutable_grad();
    const float* pg = g.data();
    for_ranges(x.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) gx[i] += pg[i];
    });
  };
}

// `y`'s gradient path with the values of integer `codes` on grid `qp`: the float simulation of an op
// whose integer kernel is cheap (residual add, average pooling) takes that kernel's result, so the
// simulation rounds where and as the integer graph rounds (ties included), while the gradient flows
// as through y (y is within one step of the codes' values).
Tensor with_integer_values(const Tensor& y, const std::vector<int8_t>& codes, const QParams& qp) {
  Tensor out = dequantize_codes(codes, y.shape(), qp);
  record_op(out, "integer_values", {y}, straight_through_to(y));
  return out;
}

// nearbyint(x) with a straight-through gradient: for values that are integers up to float rounding
// (codes divided out of their scale), where it only removes that rounding.
Tensor round_straight_through(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape());
  const float* px = x.data();
  float* py = y.data();
  for_ranges(x.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) py[i] = std::nearbyint(px[i]);
  });
  record_op(y, "round_straight_through", {x}, straight_through_to(x));
  return y;
}

// out (a's shape) <- the integer add's result for float inputs a and b as real values on qo's grid: each
// input quantized to its grid, added as add_int8 adds, dequantized. The same kernels as quantize_tensor,
// add_int8 (the fastest kernel: every path gives the same codes) and dequantize_codes, run on L1-sized
// tiles of parallel ranges: one pass over a and b, nothing allocated. A NaN in a or b throws naming it.
void integer_add_values(const AddInt8Params& p, const Tensor& a, const QParams& qa, const Tensor& b, const QParams& qb,
                        const QParams& qo, float* out) {
  const KernelPath path = best_kernel_path();
  QATLAB_CHECK(a.shape() == b.shape(), "residual add: body output " + shape_str(a.shape()) + " and shortcut output " +
                                           shape_str(b.shape()) + " differ");
  const float* pa = a.data();
  const float* pb = b.data();
  AddValueGrids grids;
  grids.a_scale = qa.scale[0], grids.b_scale = qb.scale[0], grids.out_scale = qo.scale[0];
  grids.a_min = qa.quant_min, grids.a_max = qa.quant_max, grids.b_min = qb.quant_min, grids.b_max = qb.quant_max;
  std::atomic<bool> finite{true};
  for_ranges(a.numel(), [&](int64_t begin, int64_t end) {
    if (!add_int8_values(p, grids, pa + begin, pb + begin, out + begin, end - begin, path)) finite = false;
  });
  if (finite) return;
  for (const float* src : {pa, pb}) {
    const int64_t at = find_first_nan(src, a.numel());
    if (at >= 0)
      throw std::invalid_argument(std::string("residual add: ") + (src == pa ? "body" : "shortcut") +
                                  " output element " + std::to_string(at) + " is NaN");
  }
}

}  // namespace

QatLayer::QatLayer(const std::string& type, bool is_conv) : QatNode(type), is_conv_(is_conv) {}

std::shared_ptr<QatLayer> QatLayer::from_conv(const Conv2d& conv, const BatchNorm* bn, FusedActivation act,
                                              std::shared_ptr<Quantizer> weight_quant,
                                              std::shared_ptr<Quantizer> output_quant) {
  std::shared_ptr<QatLayer> m(new QatLayer("QatConv2d", true));
  m->weight = conv.weight;
  m->bias = conv.bias;
  m->conv_params_ = conv.params();
  m->attach(bn, act, std::move(weight_quant), std::move(output_quant));
  return m;
}

std::shared_ptr<QatLayer> QatLayer::from_linear(const Linear& linear, const BatchNorm* bn, FusedActivation act,
                                                std::shared_ptr<Quantizer> weight_quant,
                                                std::shared_ptr<Quantizer> output_quant) {
  std::shared_ptr<QatLayer> m(new QatLayer("QatLinear", false));
  m->weight = linear.weight;
  m->bias = linear.bias;
  m->attach(bn, act, std::move(weight_quant), std::move(output_quant));
  return m;
}

void QatLayer::attach(const BatchNorm* bn, FusedActivation act, std::shared_ptr<Quantizer> wq,
                      std::shared_ptr<Quantizer> oq) {
  // The tensors are shared with the float layers they came from (shallow handles): training the QAT
  // model trains those same tensors, and nothing is copied.
  register_parameter("weight", &weight);
  if (bias.defined()) register_parameter("bias", &bias);
  if (bn) {
    QATLAB_CHECK(bn->channels == weight.size(0), "fusion: " + bn->type() + " of " + std::to_string(bn->channels) +
                                                  " channels after a layer of " + std::to_string(weight.size(0)) +
                                                  " outputs");
    has_bn_ = true;
    bn_gamma = bn->gamma, bn_beta = bn->beta, bn_mean = bn->running_mean, bn_var = bn->running_var;
    bn_eps = bn->eps, bn_momentum = bn->momentum;
    register_parameter("bn_weight", &bn_gamma);
    register_parameter("bn_bias", &bn_beta);
    register_buffer("bn_running_mean", &bn_mean);
    register_buffer("bn_running_var", &bn_var);
  }
  activation_ = act;
  register_module("weight_quant", std::move(wq));
  register_module("output_quant", std::move(oq));
}

void QatLayer::reset_running_statistics() {
  if (!has_bn_) return;
  bn_mean.fill(0.0f);
  bn_var.fill(1.0f);
}

Quantizer& QatLayer::weight_quant() const { return static_cast<Quantizer&>(*child("weight_quant")); }
Quantizer& QatLayer::output_quant() const { return static_cast<Quantizer&>(*child("output_quant")); }

Quantizer* QatLayer::input_requant() const { return input_requant_.get(); }

void QatLayer::set_input_requant(std::shared_ptr<Quantizer> q) {
  QATLAB_CHECK(q != nullptr && !input_requant_, "QatLayer: set_input_requant takes one quantizer, once");
  input_requant_ = q;
  register_module("input_requant", std::move(q));
}

const Quantizer* QatLayer::read_quant() const {
  if (const Quantizer* r = input_requant()) return r;
  return input_quant.get();
}

std::string QatLayer::describe() const {
  std::string s = std::string(is_conv_ ? "conv " : "linear ") + shape_str(weight.shape());
  if (has_bn_) s += std::string(" + bn") + (bn_frozen_ ? " (frozen)" : "");
  if (activation_ != FusedActivation::None) s += std::string(" + ") + activation_name(activation_);
  if (exact_) s += ", exact";
  return s;
}

Tensor QatLayer::linear_op(const Tensor& x, const Tensor& w, const Tensor& b) const {
  return is_conv_ ? conv2d(x, w, b, conv_params_) : linear(x, w, b);
}

Tensor QatLayer::per_channel_view(const Tensor& v, bool for_output) const {
  const int64_t oc = v.numel();
  if (!is_conv_) return for_output ? reshape(v, {1, oc}) : reshape(v, {oc, 1});
  return for_output ? reshape(v, {1, oc, 1, 1}) : reshape(v, {oc, 1, 1, 1});
}

Tensor QatLayer::folded_weight() const {
  NoGradGuard no_grad;
  if (!has_bn_) return weight.detach();
  const Tensor sf = div(bn_gamma, sqrt(add_scalar(bn_var, bn_eps)));
  return mul(weight, per_channel_view(sf, false));
}

Tensor QatLayer::folded_bias() const {
  NoGradGuard no_grad;
  const int64_t oc = weight.size(0);
  const Tensor b = bias.defined() ? bias.detach() : Tensor::zeros({oc});
  if (!has_bn_) return b;
  const Tensor sf = div(bn_gamma, sqrt(add_scalar(bn_var, bn_eps)));
  return add(bn_beta, mul(sub(b, bn_mean), sf));
}

namespace {
std::atomic<bool> g_output_fusion{true};
}  // namespace

void QatLayer::set_output_fusion(bool on) { g_output_fusion.store(on); }
bool QatLayer::output_fusion() { return g_output_fusion.load(); }

Tensor QatLayer::forward(const Tensor& x) { return forward_read(read_input(x)); }

Tensor QatLayer::read_input(const Tensor& x) {
  Quantizer* to = input_requant();
  if (!to) return x;
  QATLAB_CHECK(input_quant != nullptr, "QatLayer: an input requantizer without an input quantizer (was it built by "
                                       "prepare_qat?)");
  const Tensor y = (*to)(x);
  if (!input_quant->quantizing() || !to->quantizing()) return y;
  const QParams in = input_quant->qparams(), out = to->qparams();
  std::vector<int8_t> codes = quantize_tensor(x, in);
  requantize_int8(lower_requantize(in, out), codes.data(), codes.data(), static_cast<int64_t>(codes.size()));
  return with_integer_values(y, codes, out);
}

Tensor QatLayer::forward_read(const Tensor& x) {
  if (exact_ && !training()) return forward_exact(x);
  Tensor y;
  if (has_bn_) {
    // sf = gamma / sqrt(running_var + eps) through autograd ops, so gamma learns through the folded
    // weight too; computed exactly as folded_weight() does, so evaluation and convert see the same floats.
    const Tensor sf = div(bn_gamma, sqrt(add_scalar(bn_var.detach(), bn_eps)));
    // A learned step on the folded weight learns as it would on the weight itself (LsqQuantizer, "Folded
    // inputs").
    if (auto* lsq = dynamic_cast<LsqQuantizer*>(&weight_quant()); lsq && training())
      lsq->set_input_factors(sf.data(), static_cast<size_t>(sf.numel()));
    const Tensor wq = weight_quant()(mul(weight, per_channel_view(sf, false)));
    if (training() && !bn_frozen_) {
      // BN(conv(x, q(W sf)) / sf + bias) with the batch's statistics. The division by sf is BN's input
      // scale (batch_norm_scaled): one pass over the activations and its backward fewer than a div op.
      // A bias shifts only the batch mean, which BN removes, but it does move the running mean.
      // A ReLU goes into the same op (the same values and gradients as a relu op after it).
      const Tensor k = div(Tensor::ones({weight.size(0)}), sf);  // (OC)
      // With chunks (core/batch_sync.h) the op writes this chunk's statistics aside; finish() folds every
      // chunk's in, in chunk order. sf above read the running variance before any chunk changed it.
      ChunkRunningStats stats(batch_sync(), bn_mean, bn_var, bn_momentum);
      if (!bias.defined()) {
        const bool fuse_relu = activation_ == FusedActivation::ReLU;
        auto* fq = dynamic_cast<FakeQuantize*>(&output_quant());
        if (fq && output_fusion() && activation_ != FusedActivation::ReLU6) {
          // ... and the output's fake quantization too, when its quantizer can take the range alone.
          bool quantized = false;
          y = batch_norm_scaled_quantized(linear_op(x, wq, Tensor()), k, bn_gamma, bn_beta, stats.mean(), stats.var(),
                                          stats.momentum(), bn_eps, fuse_relu,
                                          [fq](float lo, float hi) { return fq->output_grid(lo, hi); }, &quantized);
          stats.finish();
          return quantized ? y : output_quant()(y);
        }
        const Tensor z = linear_op(x, wq, Tensor());
        auto* lsq = dynamic_cast<LsqQuantizer*>(&output_quant());
        if (lsq && output_fusion() && activation_ != FusedActivation::ReLU6) {
          // An LSQ output: its fake quantization goes into BN's pass and its backward into BN's.
          if (const std::optional<LsqStep> step = lsq->training_step(z)) {
            y = batch_norm_scaled_lsq(z, k, bn_gamma, bn_beta, stats.mean(), stats.var(), stats.momentum(), bn_eps,
                                      fuse_relu, *step);
            stats.finish();
            return y;
          }
        }
        y = batch_norm_scaled(z, k, bn_gamma, bn_beta, stats.mean(), stats.var(), true, stats.momentum(), bn_eps,
                              fuse_relu);
        stats.finish();
        if (fuse_relu) return output_quant()(y);
      } else {
        y = add(mul(linear_op(x, wq, Tensor()), per_channel_view(k, true)), per_channel_view(bias, true));
        y = batch_norm(y, bn_gamma, bn_beta, stats.mean(), stats.var(), true, stats.momentum(), bn_eps);
        stats.finish();
      }
    } else {
      const Tensor b = bias.defined() ? bias : Tensor::zeros({weight.size(0)});
      y = deployed_linear_op(x, wq, deployed_bias(add(bn_beta, mul(sub(b, bn_mean.detach()), sf))));
    }
  } else {
    const Tensor wq = weight_quant()(weight);
    y = deployed_linear_op(x, wq, bias.defined() ? deployed_bias(bias) : bias);
  }
  if (activation_ == FusedActivation::ReLU) y = relu(y);
  if (activation_ == FusedActivation::ReLU6) y = relu6(y);
  return output_quant()(y);
}

Tensor QatLayer::deployed_bias(const Tensor& b) const {
  const Quantizer* in = read_quant();
  if (!in || !in->quantizing() || !weight_quant().quantizing()) return b;
  // Rounded to its accumulator grid as lower_layer rounds it (bias.h): at 4 bits and below the bias
  // step can be a sizeable part of an output step, and the simulation should see it.
  return fake_quantize_bias(b, in->qparams(), weight_quant().qparams(), "fake_quantize_bias");
}

Tensor QatLayer::deployed_linear_op(const Tensor& x, const Tensor& wq, const Tensor& b) const {
  const Quantizer* read = read_quant();
  if (training() || !read || !read->quantizing() || !weight_quant().quantizing() || read->qparams().per_channel())
    return linear_op(x, wq, b);
  const QParams in = read->qparams(), w = weight_quant().qparams();
  // The same value as linear_op(x, wq, b), computed on the integer grids: x / S_in and wq / S_w[oc] are
  // the codes (q_in - Z_in) and q_w, b / (S_in * S_w[oc]) the int32 bias, up to float rounding, which
  // the rounding removes. Their float sum is then exact (integers: exact while partial sums stay below
  // 2^24, always for 8-bit codes and K <= 518 terms, and in practice far beyond) and one multiply by
  // S_in * S_w[oc] gives the real output: the simulation's output differs from the integer engine's
  // only by that multiply and the output quantizer's, not by a float accumulator's error, which would
  // flip many more codes at rounding boundaries. The gradient is the float expression's.
  const int64_t oc = wq.size(0);
  Tensor inv_w = Tensor::empty({oc}), acc_scale = Tensor::empty({oc});
  for (int64_t c = 0; c < oc; ++c) {
    const double sw = w.scale[w.per_channel() ? c : 0];
    inv_w.data()[c] = static_cast<float>(1.0 / sw);
    acc_scale.data()[c] = static_cast<float>(static_cast<double>(in.scale[0]) * sw);
  }
  const Tensor x_codes = round_straight_through(scale(x, static_cast<float>(1.0 / in.scale[0])));
  const Tensor w_codes = round_straight_through(mul(wq, per_channel_view(inv_w, false)));
  const Tensor b_codes = b.defined() ? round_straight_through(div(b, acc_scale)) : b;
  return mul(linear_op(x_codes, w_codes, b_codes), per_channel_view(acc_scale, true));
}

Tensor QatLayer::forward_exact(const Tensor& x) {
  QATLAB_CHECK(read_quant() != nullptr, "exact mode: layer has no input quantizer (was it built by prepare_qat?)");
  const LoweredLayer l = lower_layer(*this, read_quant()->qparams(), output_quant().qparams());
  const std::vector<int8_t> in = quantize_tensor(x, l.input);
  const Shape out_shape = l.is_conv ? conv2d_int8_output_shape(l.conv, x.shape(), l.weight_shape)
                                    : fully_connected_int8_output_shape(l.fc, x.shape(), l.weight_shape);
  std::vector<int8_t> out(shape_numel(out_shape));
  run_lowered(l, in.data(), x.shape(), out.data(), exact_path_);
  return dequantize_codes(out, out_shape, l.output);
}

// ---------------------------------------------------------------------------------------- QatAvgPool

QatAvgPool::QatAvgPool(int64_t kernel, int64_t stride, int64_t padding)
    : QatNode("QatAvgPool"), kernel(kernel), stride(stride ? stride : kernel), padding(padding) {}

std::string QatAvgPool::describe() const {
  return kernel == 0 ? "global" : "k=" + std::to_string(kernel) + ", stride=" + std::to_string(stride);
}

Tensor QatAvgPool::forward(const Tensor& x) {
  QATLAB_CHECK(input_quant != nullptr, "QatAvgPool: no input quantizer (was it built by prepare_qat?)");
  if (!input_quant->quantizing()) return kernel == 0 ? global_avg_pool2d(x) : avg_pool2d(x, kernel, stride, padding);
  // Both modes compute the integer kernel's result (its rounding of the mean, ties away from zero on the
  // raw codes, is not fake_quantize's ties-to-even); the simulation keeps the float pool's gradient.
  const QParams qp = input_quant->qparams();
  const std::vector<int8_t> in = quantize_tensor(x, qp);
  const Shape out_shape = kernel == 0 ? Shape{x.size(0), x.size(1)} : pool2d_int8_output_shape(x.shape(), kernel, stride, padding);
  std::vector<int8_t> out(shape_numel(out_shape));
  if (kernel == 0)
    global_avg_pool_int8(in.data(), x.shape(), out.data());
  else
    avg_pool2d_int8(in.data(), x.shape(), kernel, stride, padding, qp.zero_point[0], out.data());
  if (exact_ && !training()) return dequantize_codes(out, out_shape, qp);
  const Tensor y = kernel == 0 ? global_avg_pool2d(x) : avg_pool2d(x, kernel, stride, padding);
  return with_integer_values(y, out, qp);
}

// --------------------------------------------------------------------------------------- QatResidual

QatResidual::QatResidual(ModulePtr body, ModulePtr shortcut, bool relu_after, std::shared_ptr<Quantizer> add_quant)
    : QatNode("QatResidual"), relu_after(relu_after) {
  register_module("body", std::move(body));
  register_module("shortcut", std::move(shortcut));
  register_module("add_quant", std::move(add_quant));
}

Quantizer& QatResidual::add_quant() const { return static_cast<Quantizer&>(*child("add_quant")); }

Tensor QatResidual::forward(const Tensor& x) {
  const Tensor a = (*child("body"))(x);
  const Tensor b = (*child("shortcut"))(x);
  const bool exact_eval = exact_ && !training();
  const bool integer_add = body_quant && shortcut_quant && body_quant->quantizing() && shortcut_quant->quantizing() &&
                           add_quant().quantizing();
  QATLAB_CHECK(integer_add || !exact_eval,
               "QatResidual: exact mode needs quantizing input and output grids (was it built by prepare_qat?)");
  if (!exact_eval && integer_add && QatLayer::output_fusion() && (!relu_after || a.shape() == b.shape())) {
    // A learned-step (LSQ) sum quantizer: its backward goes into the add's, and the integer add's values
    // are the output straight away (no float sum, no fake-quantized copy of it).
    if (auto* lsq = add_quant().as<LsqQuantizer>()) {
      if (const std::optional<LsqStep> step = lsq->training_step(a)) {
        const QParams qa = body_quant->qparams(), qb = shortcut_quant->qparams(), qo = add_quant().qparams();
        Tensor out = Tensor::empty(a.shape());
        integer_add_values(lower_add(qa, qb, qo, relu_after), a, qa, b, qb, qo, out.data());
        return add_lsq(a, b, relu_after, *step, out);
      }
    }
    // An observed grid (min/max, EMA) in training: the observer takes the sum's range from a and b, and
    // the straight-through backward goes into the add's, as above. A sum that is not finite goes the
    // unfused way, whose observer reports it.
    if (auto* fq = add_quant().as<FakeQuantize>(); fq && training()) {
      float lo = 0.0f, hi = 0.0f;
      if (!fq->observer_enabled() || sum_range(a, b, relu_after, &lo, &hi)) {
        if (const std::optional<OutputGrid> grid = fq->output_grid(lo, hi)) {
          const QParams qa = body_quant->qparams(), qb = shortcut_quant->qparams(), qo = add_quant().qparams();
          Tensor out = Tensor::empty(a.shape());
          integer_add_values(lower_add(qa, qb, qo, relu_after), a, qa, b, qb, qo, out.data());
          return add_quantized(a, b, relu_after, *grid, out);
        }
      }
    }
  }
  Tensor s, y;
  if (!exact_eval) {
    s = relu_after && a.shape() == b.shape() ? add_relu(a, b) : relu_after ? relu(add(a, b)) : add(a, b);
    y = add_quant()(s);  // observes or learns the sum's grid
    if (!integer_add) return y;
  }
  // The integer add (TFLite's fixed-point recipe, see int8_kernels.h) on the codes of a and b. Its result
  // can differ from rounding the float sum by one step where the sum sits next to a rounding boundary, so
  // the simulation takes the integer result too; exact mode has no gradient path to keep.
  const QParams qa = body_quant->qparams(), qb = shortcut_quant->qparams(), qo = add_quant().qparams();
  const AddInt8Params p = lower_add(qa, qb, qo, relu_after);
  if (exact_eval) {
    Tensor out = Tensor::empty(a.shape());
    integer_add_values(p, a, qa, b, qb, qo, out.data());
    return out;
  }
  if (y.same(s)) {
    // The quantizer handed its input back: its values are the relu's (or the add's), which their backward
    // may read. The integer values go into a tensor of their own.
    Tensor out = Tensor::empty(a.shape());
    integer_add_values(p, a, qa, b, qb, qo, out.data());
    record_op(out, "integer_values", {y}, straight_through_to(y));
    return out;
  }
  // The quantizer's output is a tensor of its own whose values no backward reads (the Quantizer contract,
  // fake_quantize.h): the integer values replace them in place, and the gradient flows as through y.
  integer_add_values(p, a, qa, b, qb, qo, y.data());
  return y;
}

// ------------------------------------------------------------------------------------------ QatModel

QatModel::QatModel(std::shared_ptr<Quantizer> input_quant, ModulePtr body) : QatNode("QatModel") {
  register_module("input_quant", std::move(input_quant));
  register_module("body", std::move(body));
}

Quantizer& QatModel::input_quant() const { return static_cast<Quantizer&>(*child("input_quant")); }

Tensor QatModel::forward(const Tensor& x) { return (*child("body"))(input_quant()(x)); }

// ------------------------------------------------- the walks (walk.h) and prepare_qat's rules, per module

void QatLayer::lower(Lowering& walk, const std::string& name) const {
  if (const Quantizer* r = input_requant()) {
    const QParams to = r->qparams();
    Int8Op op;
    op.kind = Int8OpKind::Requantize;
    op.name = ModelWalk::child_name(name, "input_requant");
    op.grid = to;
    op.requant = lower_requantize(walk.at.grid, to);
    walk.emit(std::move(op), to);
  }
  const QParams out = output_quant().qparams();
  Int8Op op;
  op.kind = is_conv_ ? Int8OpKind::Conv2d : Int8OpKind::FullyConnected;
  op.name = name;
  op.layer = lower_layer(*this, walk.at.grid, out);
  walk.emit(std::move(op), out);
}

void QatLayer::describe_node(Description& walk, const std::string& name) const {
  if (const Quantizer* r = input_requant()) {
    DescribedNode q;
    q.kind = DescribedNode::Kind::Requantize;
    q.name = q.output_name = ModelWalk::child_name(name, "input_requant");
    q.description = "requantize";
    q.output_quant = r;
    const QParams to = Description::grid_of(*r);
    if (to.scale.empty() || walk.at.grid.scale.empty()) {
      q.lowering_error = "no grid yet";
    } else {
      try {
        const RequantizeInt8Params p = lower_requantize(walk.at.grid, to);
        q.output_multiplier = {p.multiplier};
        q.output_shift = {p.shift};
      } catch (const std::logic_error& e) {
        q.lowering_error = e.what();
      }
    }
    walk.row(std::move(q), {walk.at.slot}, to);
  }
  DescribedNode n;
  n.kind = is_conv_ ? DescribedNode::Kind::Conv : DescribedNode::Kind::Linear;
  n.name = name;
  n.type = type();
  n.description = describe();
  n.weights = &weight_quant();
  n.weights_name = name + ".weight_quant";
  n.output_quant = &output_quant();
  n.output_name = name + ".output_quant";
  const QParams out = Description::grid_of(output_quant());
  if (out.scale.empty() || walk.at.grid.scale.empty()) {
    n.lowering_error = "no grid yet";
  } else {
    try {
      const LoweredLayer low = lower_layer(*this, walk.at.grid, out);
      n.output_multiplier = low.is_conv ? low.conv.output_multiplier : low.fc.output_multiplier;
      n.output_shift = low.is_conv ? low.conv.output_shift : low.fc.output_shift;
    } catch (const std::logic_error& e) {  // std::invalid_argument: no integer form; else a grid not found yet
      n.lowering_error = e.what();
    }
  }
  const Tensor w = folded_weight();  // (OC, C/groups, KH, KW) or (OC, IN)
  const auto [lo, hi] = std::minmax_element(w.data(), w.data() + w.numel());
  n.weight_min = *lo, n.weight_max = *hi;
  n.out_channels = w.size(0);
  const QParams wq = Description::grid_of(weight_quant());
  if (!wq.scale.empty()) {
    // Each channel's codes as fake_quantize rounds them (1 / s in float, symmetric: zero point 0).
    const int64_t oc = w.size(0), per = w.numel() / oc;
    for (int64_t c = 0; c < oc; ++c) {
      const float s = wq.scale[wq.scale.size() == 1 ? 0 : static_cast<size_t>(c)];
      if (s <= static_cast<float>(kMinScale)) {
        n.floor_channels.push_back(c);
        continue;
      }
      const float inv = 1.0f / s;
      const float* wc = w.data() + c * per;
      if (wq.odd_codes) {
        if (std::all_of(wc, wc + per, [inv](float v) { return std::abs(round_to_odd(v * inv)) == 1.0f; }))
          n.sign_only_channels.push_back(c);
      } else if (std::all_of(wc, wc + per, [inv](float v) { return std::nearbyint(v * inv) == 0.0f; })) {
        n.zeroed_channels.push_back(c);
      }
    }
    n.weight_mid_rise = wq.odd_codes;
  }
  walk.row(std::move(n), {walk.at.slot}, out);
}

Tensor QatLayer::record(Recording& walk, const std::string& name, const Tensor& x) {
  const Tensor read = read_input(x);
  if (input_requant()) walk.seen(ModelWalk::child_name(name, "input_requant"), read);
  const Tensor y = forward_read(read);
  walk.seen(name, y);
  return y;
}

void QatAvgPool::lower(Lowering& walk, const std::string& name) const {
  Int8Op op;
  op.kind = kernel == 0 ? Int8OpKind::GlobalAvgPool : Int8OpKind::AvgPool2d;
  op.name = name;
  op.kernel = kernel, op.stride = stride, op.pad = padding;
  op.grid = walk.at.grid;
  walk.emit(std::move(op), walk.at.grid);
}

void QatAvgPool::describe_node(Description& walk, const std::string& name) const { walk.keep(*this, name, true); }

void QatResidual::lower(Lowering& walk, const std::string& name) const {
  const auto [body, shortcut] = walk.walk_branches(*child("body"), ModelWalk::child_name(name, "body"),
                                                   *child("shortcut"), ModelWalk::child_name(name, "shortcut"));
  const QParams out = add_quant().qparams();
  Int8Op op;
  op.kind = Int8OpKind::Add;
  op.name = name;
  op.grid = out;
  op.add = lower_add(body.grid, shortcut.grid, out, relu_after);
  walk.emit(std::move(op), {body.slot, shortcut.slot}, out);
}

void QatResidual::describe_node(Description& walk, const std::string& name) const {
  const auto [body, shortcut] = walk.walk_branches(*child("body"), ModelWalk::child_name(name, "body"),
                                                   *child("shortcut"), ModelWalk::child_name(name, "shortcut"));
  DescribedNode n;
  n.kind = DescribedNode::Kind::Add;
  n.name = name;
  n.type = type();
  n.description = describe();
  n.output_quant = &add_quant();
  n.output_name = name + ".add_quant";
  const QParams out = Description::grid_of(add_quant());
  if (out.scale.empty() || body.grid.scale.empty() || shortcut.grid.scale.empty()) {
    n.lowering_error = "no grid yet";
  } else {
    try {
      const AddInt8Params p = lower_add(body.grid, shortcut.grid, out, relu_after);
      n.output_multiplier = {p.output_multiplier};
      n.output_shift = {p.output_shift};
    } catch (const std::logic_error& e) {
      n.lowering_error = e.what();
    }
  }
  walk.row(std::move(n), {body.slot, shortcut.slot}, out);
}

// forward outside exact mode, with the branches run by the recording so that their rows are seen too:
// add_quant(act(body(x) + shortcut(x))).
Tensor QatResidual::record(Recording& walk, const std::string& name, const Tensor& x) {
  const Tensor a = walk.run(*child("body"), ModelWalk::child_name(name, "body"), x);
  const Tensor b = walk.run(*child("shortcut"), ModelWalk::child_name(name, "shortcut"), x);
  Tensor sum = add(a, b);
  if (relu_after) sum = relu(sum);
  const Tensor y = add_quant()(sum);
  walk.seen(name, y);
  return y;
}

void QatModel::lower(Lowering& walk, const std::string& name) const {
  Int8Op quantize;
  quantize.kind = Int8OpKind::Quantize;
  quantize.name = "input_quant";
  quantize.grid = input_quant().qparams();
  walk.emit(quantize, {}, quantize.grid);
  walk.walk(*child("body"), ModelWalk::child_name(name, "body"));
  Int8Op dequantize;
  dequantize.kind = Int8OpKind::Dequantize;
  dequantize.name = "output";
  dequantize.grid = walk.at.grid;
  walk.emit(std::move(dequantize), walk.at.grid);
}

void QatModel::describe_node(Description& walk, const std::string& name) const {
  DescribedNode input;
  input.kind = DescribedNode::Kind::Input;
  input.name = ModelWalk::child_name(name, "input_quant");
  input.type = input_quant().type();
  input.description = "model input";
  input.output_quant = &input_quant();
  input.output_name = input.name;
  walk.row(std::move(input), {}, Description::grid_of(input_quant()));
  walk.walk(*child("body"), ModelWalk::child_name(name, "body"));
}

Tensor QatModel::record(Recording& walk, const std::string& name, const Tensor& x) {
  const Tensor q = input_quant()(x);
  walk.seen(ModelWalk::child_name(name, "input_quant"), q);
  return walk.run(*child("body"), ModelWalk::child_name(name, "body"), q);
}

namespace {

// Conv2d or Linear, fused with a following BatchNorm (2d after a conv, 1d after a linear layer) and
// ReLU/ReLU6, which it absorbs.
PrepareStep fuse_layer(Preparer& p, const ModulePtr& m, const std::vector<ModulePtr>& following, const std::string& name) {
  const bool conv = m->is<Conv2d>();
  size_t used = 0;
  const BatchNorm* bn = nullptr;
  FusedActivation act = FusedActivation::None;
  // The k-th module after this one, or null past the end.
  const auto next = [&](size_t k) { return k <= following.size() ? following[k - 1].get() : nullptr; };
  if (next(1) && (conv ? next(1)->is<BatchNorm2d>() : next(1)->is<BatchNorm1d>())) bn = next(++used)->as<BatchNorm>();
  if (next(used + 1) && next(used + 1)->is<ReLU>()) act = FusedActivation::ReLU, ++used;
  else if (next(used + 1) && next(used + 1)->is<ReLU6>()) act = FusedActivation::ReLU6, ++used;

  const int64_t out_channels = conv ? m->as<Conv2d>()->out_channels : m->as<Linear>()->out_features;
  auto wq = Preparer::make_quantizer(p.weight_for(name, m->type()), out_channels);
  auto oq = Preparer::make_quantizer(p.activation_for(name, m->type()), 1, act != FusedActivation::None);
  auto layer = conv ? QatLayer::from_conv(*m->as<Conv2d>(), bn, act, wq, oq)
                    : QatLayer::from_linear(*m->as<Linear>(), bn, act, wq, oq);
  layer->input_quant = p.grid;
  if (auto requant = p.input_requantizer(name, m->type())) layer->set_input_requant(std::move(requant));
  p.grid = oq;
  return {layer, used};
}

// Average pooling stays on its input's grid, as the integer kernel keeps it.
PrepareStep avg_pool(Preparer& p, const ModulePtr& m, const std::vector<ModulePtr>&, const std::string&) {
  std::shared_ptr<QatAvgPool> pool;
  if (const AvgPool2d* a = m->as<AvgPool2d>()) {
    pool = std::make_shared<QatAvgPool>(a->kernel, a->stride, a->padding);
  } else {
    pool = std::make_shared<QatAvgPool>(0, 0, 0);
  }
  pool->input_quant = p.grid;
  return {pool};
}

// The dotted name of the module whose output quantizer ends a branch (`prefix`: the branch's name and a
// dot): its last module that quantizes, past those that keep their input's grid or that the layer before
// absorbs. "" when no module in it quantizes.
std::string branch_tail(const Module& branch, const std::string& prefix) {
  const auto children = branch.children();
  for (auto it = children.rbegin(); it != children.rend(); ++it) {
    const Module& m = *it->second;
    if (m.is<BatchNorm>() || m.is<ReLU>() || m.is<ReLU6>() || m.is<MaxPool2d>() || m.is<AvgPool2d>() ||
        m.is<GlobalAvgPool2d>() || m.is<Flatten>() || m.is<Identity>() || m.is<Dropout>())
      continue;
    if (!m.is<Sequential>()) return prefix + it->first;
    if (std::string tail = branch_tail(m, prefix + it->first + "."); !tail.empty()) return tail;
  }
  return "";
}

// Both branches start from the current grid; the sum gets its own quantizer (with the ReLU fused). The
// layer that ends each branch is marked, for the kResidualBranches override (qconfig.h).
PrepareStep residual(Preparer& p, const ModulePtr& m, const std::vector<ModulePtr>&, const std::string& name) {
  const std::shared_ptr<Quantizer> entry = p.grid;
  const auto branch = [&](const std::string& branch_name) {
    p.grid = entry;
    ModulePtr b = m->child(branch_name);
    const std::string prefix = name + "." + branch_name + ".";
    if (b->is<Sequential>()) {
      const std::string tail = branch_tail(*b, prefix);
      if (!tail.empty()) p.mark_residual_branch(tail);
      p.rewrite(*b, prefix);
      // branch_tail's list of modules that keep their grid must match the rules': a tail that never asked
      // for its activation settings would leave a kResidualBranches override silently unapplied.
      QATLAB_CHECK(tail.empty() || p.quantized_names().count(tail),
                   "prepare_qat: '" + tail + "' ends residual branch '" + prefix + "' but quantizes nothing "
                   "(branch_tail in qat_layers.cpp does not know its module)");
    } else if (!b->is<Identity>()) {
      throw std::invalid_argument("prepare_qat: residual branch '" + name + "." + branch_name +
                                  "' must be a Sequential or Identity");
    }
    return std::pair{b, p.grid};
  };
  auto [body, body_grid] = branch("body");
  auto [shortcut, shortcut_grid] = branch("shortcut");
  const bool relu_after = m->child("act")->is<ReLU>();
  auto add_quant = Preparer::make_quantizer(p.activation_for(name, "Residual"), 1, relu_after);
  auto q = std::make_shared<QatResidual>(body, shortcut, relu_after, add_quant);
  q->body_quant = body_grid;
  q->shortcut_quant = shortcut_grid;
  p.mark_residual_sum(add_quant.get(), relu_after);
  p.grid = add_quant;
  return {q};
}

// A batch norm the rule of the layer before it did not absorb.
PrepareStep lone_batch_norm(Preparer&, const ModulePtr& m, const std::vector<ModulePtr>&, const std::string& name) {
  throw std::invalid_argument("prepare_qat: cannot quantize " + m->type() + " '" + name +
                              "' (batch norm must follow a Conv2d or Linear)");
}

}  // namespace

void add_qat_layer_rules(PrepareRules& rules) {
  rules.add<Conv2d>(fuse_layer);
  rules.add<Linear>(fuse_layer);
  rules.add<BatchNorm>(lone_batch_norm);
  rules.add<AvgPool2d>(avg_pool);
  rules.add<GlobalAvgPool2d>(avg_pool);
  rules.add<Residual>(residual);
}

}  // namespace qatlab
