// tensor.cpp: tensor storage, factories and the reverse-mode autograd walk.
#include "core/tensor.h"

#include "core/anomaly.h"
#include "core/parallel.h"
#include "core/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <sys/mman.h>
#include <new>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace qatlab {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    QATLAB_CHECK(d >= 0, "negative dimension in shape " + shape_str(shape));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + ")";
}

void throw_invalid_argument(const std::string& what) { throw std::invalid_argument(what); }

namespace {

// Recycles large float buffers. A training step allocates the same activation, gradient and scratch
// sizes every step; giving them back to the OS and faulting fresh zero-filled pages in on the next
// step cost about 3 % of a ResNet-20 training step. A recycled buffer holds stale values, which is no
// different from fresh memory as far as callers know: Tensor::empty is uninitialised.
//
// Process-wide like malloc itself and guarded by a mutex (tensors are allocated from loader threads
// too). It decides only where memory comes from, never a value. Small buffers go straight to malloc,
// whose own free lists serve them without page faults.
class BufferPool {
 public:
  static constexpr size_t kMinBytes = size_t{1} << 16;      // smaller buffers bypass the pool
  static constexpr size_t kMaxIdleBytes = size_t{1} << 30;  // idle memory kept for reuse, at most
  static constexpr size_t kHugeBytes = size_t{2} << 20;     // a huge page

  float* take(size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(bytes);
      if (it != idle_.end() && !it->second.empty()) {
        float* p = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= bytes;
        return p;
      }
    }
    if (bytes >= kHugeBytes) {
      // Large buffers on 2 MB pages where the kernel offers them (transparent huge pages on request):
      // the passes over activations stream through them, and the hardware prefetchers stop at every
      // 4 KB page boundary.
      float* p = static_cast<float*>(std::aligned_alloc(kHugeBytes, (bytes + kHugeBytes - 1) / kHugeBytes * kHugeBytes));
      if (!p) throw std::bad_alloc();
      madvise(p, (bytes + kHugeBytes - 1) / kHugeBytes * kHugeBytes, MADV_HUGEPAGE);
      return p;
    }
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
    return p;
  }

  void give_back(float* p, size_t bytes) {
    if (bytes < kMinBytes) {
      std::free(p);
      return;
    }
    std::vector<float*> spill;  // freed outside the lock
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_bytes_ + bytes > kMaxIdleBytes) {
        // Over the cap (the sizes in use have changed, e.g. a new batch shape): drop every idle buffer
        // rather than keep a stale mix.
        for (auto& [size, list] : idle_) spill.insert(spill.end(), list.begin(), list.end());
        idle_.clear();
        idle_bytes_ = 0;
      }
      idle_[bytes].push_back(p);
      idle_bytes_ += bytes;
    }
    for (float* q : spill) std::free(q);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<float*>> idle_;  // bytes -> idle buffers of that size
  size_t idle_bytes_ = 0;
};

// Never destroyed: tensors held in static objects may be released after any static destructor ran.
BufferPool& buffer_pool() {
  static BufferPool* pool = new BufferPool();
  return *pool;
}

}  // namespace

// A training step zeroes a gradient buffer for nearly every activation: in parallel ranges, that is a
// memset per core instead of one for the whole buffer.
static void fill_floats(float* p, int64_t n, float value) {
  for_ranges(n, [=](int64_t begin, int64_t end) { std::fill(p + begin, p + end, value); });
}

std::shared_ptr<float[]> alloc_floats(int64_t n) {
  // Round up so the size is a multiple of the alignment, as aligned_alloc requires; never zero bytes.
  size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  float* p = buffer_pool().take(bytes);
  return std::shared_ptr<float[]>(p, [bytes](float* q) { buffer_pool().give_back(q, bytes); });
}

// ----------------------------------------------------------------------------------------- factories

Tensor Tensor::empty(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->numel = shape_numel(shape);
  impl->data = alloc_floats(impl->numel);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.0f); }
Tensor Tensor::ones(const Shape& shape) { return full(shape, 1.0f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill(value);
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  Tensor t = empty(shape);
  QATLAB_CHECK(static_cast<int64_t>(values.size()) == t.numel(),
            "from_vector: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

// ----------------------------------------------------------------------------------------- accessors

static void check_defined(const TensorImpl* impl) {
  if (!impl) throw std::logic_error("use of an undefined Tensor");
}

const Shape& Tensor::shape() const {
  check_defined(impl_.get());
  return impl_->shape;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  const int64_t i = d < 0 ? d + n : d;
  QATLAB_CHECK(i >= 0 && i < n, "dimension " + std::to_string(d) + " out of range for shape " + shape_str(shape()));
  return impl_->shape[i];
}

int64_t Tensor::numel() const {
  check_defined(impl_.get());
  return impl_->numel;
}

float* Tensor::data() {
  check_defined(impl_.get());
  return impl_->data.get();
}

const float* Tensor::data() const {
  check_defined(impl_.get());
  return impl_->data.get();
}

float Tensor::item() const {
  QATLAB_CHECK(numel() == 1, "item() on a tensor of shape " + shape_str(shape()));
  return data()[0];
}

std::vector<float> Tensor::to_vector() const { return std::vector<float>(data(), data() + numel()); }

void Tensor::fill(float value) { fill_floats(data(), numel(), value); }

void Tensor::copy_from(const Tensor& src) {
  QATLAB_CHECK(src.numel() == numel(), "copy_from: " + shape_str(src.shape()) + " into " + shape_str(shape()));
  std::memcpy(data(), src.data(), sizeof(float) * numel());
}

Tensor Tensor::detach() const {
  check_defined(impl_.get());
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = impl_->shape;
  impl->numel = impl_->numel;
  impl->data = impl_->data;
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape());
  t.copy_from(*this);
  return t;
}

// ---------------------------------------------------------------------------------------- gradients

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  check_defined(impl_.get());
  QATLAB_CHECK(impl_->grad_fn == nullptr, "set_requires_grad on a tensor an op produced (not a leaf)");
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return impl_ && impl_->grad_fn == nullptr; }
bool Tensor::has_grad() const { return impl_ && impl_->grad != nullptr; }

Tensor Tensor::grad() const {
  if (!has_grad()) return Tensor();
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = impl_->shape;
  impl->numel = impl_->numel;
  impl->data = impl_->grad;
  return Tensor(std::move(impl));
}

float* Tensor::mutable_grad() const {
  check_defined(impl_.get());
  if (!impl_->grad) {
    impl_->grad = alloc_floats(impl_->numel);
    fill_floats(impl_->grad.get(), impl_->numel, 0.0f);
  }
  return impl_->grad.get();
}

float* Tensor::grad_for_write(bool* fresh) const {
  check_defined(impl_.get());
  *fresh = !impl_->grad;
  if (*fresh) impl_->grad = alloc_floats(impl_->numel);
  return impl_->grad.get();
}

void Tensor::zero_grad() const {
  if (has_grad()) fill_floats(impl_->grad.get(), impl_->numel, 0.0f);
}

// ---------------------------------------------------------------------------------------- autograd

namespace {
thread_local bool g_grad_enabled = true;

void collect_topological(TensorImpl* root, std::vector<TensorImpl*>& order) {
  // Iterative post-order DFS: deep graphs (LSTMs unrolled over time) must not overflow the stack.
  std::unordered_set<TensorImpl*> seen;
  std::vector<std::pair<TensorImpl*, size_t>> stack;
  stack.push_back({root, 0});
  seen.insert(root);
  while (!stack.empty()) {
    auto& [impl, next] = stack.back();
    Node* node = impl->grad_fn.get();
    if (node && next < node->inputs.size()) {
      TensorImpl* child = node->inputs[next++].impl();
      if (child->grad_fn && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(impl);
      stack.pop_back();
    }
  }
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

void record_op(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn) {
  profile_forward_mark(name);
  if (anomaly_detection()) check_op_output(out, name, active_profiler() ? &profile_current_scope() : nullptr);
  if (!g_grad_enabled) return;
  auto node = std::make_shared<Node>();
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) node->inputs.push_back(t);
  if (node->inputs.empty()) return;
  node->name = name;
  if (active_profiler()) node->scope = &profile_current_scope();
  node->backward = std::move(fn);
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
}

void record_op(Tensor& out, const char* name, std::initializer_list<Tensor> inputs, BackwardFn fn) {
  record_op(out, name, std::vector<Tensor>(inputs), std::move(fn));
}

void Tensor::backward() {
  QATLAB_CHECK(numel() == 1, "backward() without a seed needs a one-element tensor, got " + shape_str(shape()));
  backward(Tensor::ones(shape()));
}

void Tensor::backward(const Tensor& seed) {
  QATLAB_CHECK(seed.shape() == shape(), "backward seed " + shape_str(seed.shape()) + " for " + shape_str(shape()));
  QATLAB_CHECK(requires_grad(), "backward() on a tensor that does not require a gradient");
  float* g = mutable_grad();
  const float* s = seed.data();
  for (int64_t i = 0; i < numel(); ++i) g[i] += s[i];

  std::vector<TensorImpl*> order;
  collect_topological(impl_.get(), order);
  // Post-order puts inputs before outputs: walk it backwards.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    TensorImpl* impl = *it;
    if (!impl->grad_fn || !impl->grad) continue;
    Tensor grad_out(std::make_shared<TensorImpl>(TensorImpl{impl->shape, impl->numel, impl->grad, nullptr, false, nullptr}));
    Node& node = *impl->grad_fn;
    if (Profiler* profiler = active_profiler()) {
      profile_set_backward_op(node.scope, node.name);
      const auto t0 = std::chrono::steady_clock::now();
      node.backward(grad_out);
      profiler->add_backward(node.scope ? *node.scope : std::string(), node.name,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      profile_set_backward_op(nullptr, nullptr);
    } else {
      node.backward(grad_out);
    }
    if (anomaly_detection()) check_op_gradients(node, grad_out);
    // An intermediate's gradient is spent once its op has passed it on; free it to cap memory.
    if (impl != impl_.get()) impl->grad.reset();
  }
  profile_reset_mark();  // the time of this walk is no op's forward time
}

}  // namespace qatlab
