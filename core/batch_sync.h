// batch_sync.h: how the chunks of one global batch, each run through the model on its own (one after
// another on one process, or spread over several), agree on what stateful layers take from the batch:
// observers' ranges, learned quantizers' first-batch initialisation, batch norm's running statistics.
//
// Without a BatchSync (the default) a layer takes these from the batch it sees, as always. With one, the
// layer gives its chunk's statistic to exchange() and changes its state once, from every chunk's
// statistics in chunk order, before any chunk goes on: the state after a step, and so every rounding,
// is the same whichever process ran which chunk (nn/train/chunked_step.h runs the chunks).
//
// Shape letters: C channels, K chunks.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace qatlab {

class BatchSync {
 public:
  virtual ~BatchSync() = default;
  // Every chunk of the global batch calls this at the same point of its forward pass with the same
  // number of values. `combine` runs once, given every chunk's values in chunk order (chunk k's at
  // [k * n, (k + 1) * n), n = mine.size()), before any chunk returns from the call; it should change
  // shared state only (which chunk's `combine` runs is not said). Throws when the step was abandoned
  // because another chunk failed.
  using Combine = std::function<void(std::span<const double> all, int64_t chunks)>;
  virtual void exchange(std::span<const double> mine, const Combine& combine) = 0;
  // The calling chunk: its index in the global batch (0..chunks()-1) and a number unique to this chunk
  // of this batch in the run, for its own random draws (dropout).
  virtual int64_t chunk() const = 0;
  virtual int64_t chunks() const = 0;
  virtual uint64_t chunk_stream() const = 0;
};

// The (C) minima and maxima over every chunk: exchanges lo and hi, then calls fold once with the
// elementwise minimum of the chunks' lo and maximum of their hi (an order-free reduction).
void exchange_range(BatchSync& sync, const std::vector<float>& lo, const std::vector<float>& hi,
                    const std::function<void(const std::vector<float>& lo, const std::vector<float>& hi)>& fold);

// Batch norm in training with chunks: the op is handed scratch running statistics and momentum 1, which
// makes it write its chunk's own batch statistics there exactly ((1 - 1) * r + 1 * s = s); finish()
// exchanges them and folds them into the real running statistics in chunk order,
// running = (1 - momentum) * running + momentum * chunk's, as the op folds one batch. Without a sync,
// mean() / var() / momentum() are the real ones and finish() does nothing.
class ChunkRunningStats {
 public:
  ChunkRunningStats(BatchSync* sync, Tensor& running_mean, Tensor& running_var, float momentum);
  Tensor& mean() { return sync_ ? scratch_mean_ : running_mean_; }
  Tensor& var() { return sync_ ? scratch_var_ : running_var_; }
  float momentum() const { return sync_ ? 1.0f : momentum_; }
  void finish();

 private:
  BatchSync* sync_;
  Tensor& running_mean_;
  Tensor& running_var_;
  float momentum_;
  Tensor scratch_mean_, scratch_var_;  // (C)
};

}  // namespace qatlab
