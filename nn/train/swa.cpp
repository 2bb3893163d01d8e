// swa.cpp: the running mean of the weights, and batch norm's statistics recomputed for them.
#include "nn/train/swa.h"

#include <map>
#include <stdexcept>

#include "nn/running_stats.h"

namespace qatlab {

WeightAverage::WeightAverage(const Module& model) {
  for (const auto& [name, p] : model.named_parameters()) mean_.push_back({name, Tensor::zeros(p.shape())});
}

void WeightAverage::add(const Module& model) {
  const NamedTensors params = model.named_parameters();
  if (params.size() != mean_.size()) throw std::logic_error("WeightAverage::add: another model than its own");
  const float keep = static_cast<float>(count_) / static_cast<float>(count_ + 1), take = 1.0f - keep;
  for (size_t i = 0; i < params.size(); ++i) {
    const float* w = params[i].second.data();
    float* m = mean_[i].second.data();
    const int64_t n = params[i].second.numel();
    // keep * m + take * w is mean + (w - mean) / (count + 1) rearranged; the first call copies w exactly.
    for (int64_t j = 0; j < n; ++j) m[j] = count_ == 0 ? w[j] : keep * m[j] + take * w[j];
  }
  ++count_;
}

void WeightAverage::load(const NamedTensors& state, int64_t count) {
  if (count < 1) throw std::invalid_argument("the averaged weights count " + std::to_string(count) + " epochs, expected >= 1");
  const std::map<std::string, Tensor> by_name(state.begin(), state.end());
  if (by_name.size() != mean_.size())
    throw std::invalid_argument("the averaged weights hold " + std::to_string(by_name.size()) + " tensors, the model has " +
                                std::to_string(mean_.size()) + " parameters");
  for (auto& [name, m] : mean_) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) throw std::invalid_argument("the averaged weights lack " + name);
    if (it->second.shape() != m.shape()) throw std::invalid_argument("the averaged weights' " + name + " has another shape");
    m.copy_from(it->second);
  }
  count_ = count;
}

void WeightAverage::copy_to(Module& model) const {
  if (count_ < 1) throw std::logic_error("WeightAverage::copy_to: nothing averaged yet");
  const NamedTensors params = model.named_parameters();
  if (params.size() != mean_.size()) throw std::logic_error("WeightAverage::copy_to: another model than its own");
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i].second;
    p.copy_from(mean_[i].second);
  }
}

namespace {

void collect_statistics(Module& m, std::vector<RunningStatistics*>& out) {
  if (RunningStatistics* r = dynamic_cast<RunningStatistics*>(&m); r && r->updates_running_statistics()) out.push_back(r);
  for (const auto& [name, child] : m.children()) collect_statistics(*child, out);
}

}  // namespace

void recompute_bn_statistics(Module& model, DataLoader& loader, int64_t epoch) {
  std::vector<RunningStatistics*> norms;
  collect_statistics(model, norms);
  if (norms.empty()) return;
  std::vector<float> momentum;
  for (RunningStatistics* r : norms) {
    momentum.push_back(r->running_statistics_momentum());
    r->reset_running_statistics();
  }
  const bool was_training = model.training();
  model.train();
  {
    NoGradGuard no_grad;
    loader.start_epoch(epoch);
    Batch batch;
    for (int64_t k = 0; loader.next(batch); ++k) {
      // Momentum 1 / (k + 1) makes the running value the plain mean of the k + 1 batches so far.
      for (RunningStatistics* r : norms) r->set_running_statistics_momentum(1.0f / static_cast<float>(k + 1));
      model.forward(batch.images);
    }
  }
  for (size_t i = 0; i < norms.size(); ++i) norms[i]->set_running_statistics_momentum(momentum[i]);
  model.set_training(was_training);
}

}  // namespace qatlab
