// chunked_step.cpp: the chunk workers, their hand-over at every shared statistic, and the gradient sum.
#include "nn/train/chunked_step.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/distributed.h"

namespace qatlab {

namespace {

// The worker the calling thread is (its index in workers_), -1 on any other thread: how exchange()
// knows which chunk called it without every layer passing it down.
thread_local int t_worker = -1;

// Thrown in a chunk waiting at an exchange when another chunk failed: the step is abandoned.
struct StepAbandoned : std::runtime_error {
  StepAbandoned() : std::runtime_error("step abandoned: another chunk of the batch failed") {}
};

int64_t parameter_numel(const std::vector<ParamRef>& params) {
  int64_t n = 0;
  for (const ParamRef& p : params) n += p.tensor.numel();
  return n;
}

}  // namespace

ChunkedStep::ChunkedStep(int64_t chunks, int threads) : chunks_(chunks), threads_(threads) {
  const int64_t ranks = world_size(), rank = world_rank();
  if (chunks < ranks)
    throw std::invalid_argument("a batch in " + std::to_string(chunks) + " chunks cannot be shared by " +
                                std::to_string(ranks) + " processes: every process needs at least one chunk");
  for (int64_t r = 0; r < ranks; ++r) rank_chunks_.push_back((r + 1) * chunks / ranks - r * chunks / ranks);
  first_ = rank * chunks / ranks;
  end_ = (rank + 1) * chunks / ranks;
  workers_.resize(static_cast<size_t>(end_ - first_));
  for (int w = 0; w < static_cast<int>(workers_.size()); ++w) workers_[w].thread = std::thread([this, w] { worker_loop(w); });
}

ChunkedStep::~ChunkedStep() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  cv_.notify_all();
  for (Worker& w : workers_) w.thread.join();
}

void ChunkedStep::worker_loop(int w) {
  t_worker = w;
  omp_set_num_threads(threads_);  // a new thread starts from OpenMP's defaults, not the main thread's setting
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return quit_ || active_ == w; });
    if (quit_) return;
    Worker& me = workers_[w];
    const int64_t k = first_ + w;
    const int64_t begin = chunk_begin(k, rows_), end = chunk_begin(k + 1, rows_);
    lock.unlock();
    try {
      ChunkTally tally = (*work_)(k, begin, end);
      // Still this worker's turn (nothing yields between a backward and here): the gradient it left.
      const int64_t numel = parameter_numel(*params_);
      float* dst = grads_.data() + static_cast<int64_t>(w) * numel;
      for (const ParamRef& p : *params_) {
        const int64_t n = p.tensor.numel();
        if (p.tensor.has_grad())
          std::copy(p.tensor.grad().data(), p.tensor.grad().data() + n, dst);
        else
          std::fill(dst, dst + n, 0.0f);
        dst += n;
      }
      lock.lock();
      me.tally = tally;
      me.state = State::Done;
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      me.error = std::current_exception();
      me.state = State::Failed;
    }
    active_ = -1;
    cv_.notify_all();
  }
}

void ChunkedStep::resume(int w) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (workers_[w].state != State::AtExchange) workers_[w].state = State::Running;
  active_ = w;
  cv_.notify_all();
  cv_.wait(lock, [&] { return active_ == -1; });
}

void ChunkedStep::exchange(std::span<const double> mine, const Combine& combine) {
  const int w = t_worker;
  if (w < 0) throw std::logic_error("BatchSync::exchange called outside a chunk of a ChunkedStep");
  std::unique_lock<std::mutex> lock(mutex_);
  Worker& me = workers_[w];
  me.payload.assign(mine.begin(), mine.end());
  me.combine = &combine;
  me.state = State::AtExchange;
  active_ = -1;
  cv_.notify_all();
  cv_.wait(lock, [&] { return active_ == w; });
  me.combine = nullptr;
  if (cancel_) throw StepAbandoned();
  me.state = State::Running;
}

int64_t ChunkedStep::chunk() const {
  if (t_worker < 0) throw std::logic_error("BatchSync::chunk called outside a chunk of a ChunkedStep");
  return first_ + t_worker;
}

uint64_t ChunkedStep::chunk_stream() const { return stream_ * static_cast<uint64_t>(chunks_) + chunk(); }

void ChunkedStep::gather_and_combine() {
  const size_t n = workers_.front().payload.size();
  std::vector<double> mine;  // (local chunks, n)
  for (const Worker& w : workers_) {
    if (w.payload.size() != n)
      throw std::logic_error("the chunks of a batch exchanged statistics of different sizes (" +
                             std::to_string(n) + " and " + std::to_string(w.payload.size()) + " values)");
    mine.insert(mine.end(), w.payload.begin(), w.payload.end());
  }
  std::vector<int64_t> counts;
  for (int64_t c : rank_chunks_) counts.push_back(c * static_cast<int64_t>(n));
  std::vector<double> all(static_cast<size_t>(chunks_) * n);  // (K, n)
  all_gather(std::span<const double>(mine), std::span<double>(all), counts);
  (*workers_.front().combine)(all, chunks_);
}

void ChunkedStep::abandon() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_ = true;
  }
  for (int w = 0; w < static_cast<int>(workers_.size()); ++w)
    if (workers_[w].state == State::AtExchange) resume(w);
  std::lock_guard<std::mutex> lock(mutex_);
  cancel_ = false;
}

std::vector<ChunkTally> ChunkedStep::run(int64_t rows, uint64_t stream, const std::vector<ParamRef>& params,
                                         const Work& work) {
  if (rows < chunks_)
    throw std::invalid_argument("a batch of " + std::to_string(rows) + " rows cannot be cut into " +
                                std::to_string(chunks_) + " chunks");
  const int64_t numel = parameter_numel(params);
  work_ = &work;
  params_ = &params;
  rows_ = rows;
  stream_ = stream;
  grads_.assign(workers_.size() * static_cast<size_t>(numel), 0.0f);
  for (Worker& w : workers_) w.state = State::Idle, w.error = nullptr;

  const int local = static_cast<int>(workers_.size());
  for (;;) {
    for (int w = 0; w < local; ++w)
      if (workers_[w].state == State::Idle || workers_[w].state == State::AtExchange) resume(w);
    int done = 0, waiting = 0;
    std::exception_ptr first_error;
    for (const Worker& w : workers_) {
      done += w.state == State::Done;
      waiting += w.state == State::AtExchange;
      if (w.state == State::Failed && !first_error) first_error = w.error;
    }
    if (first_error) {
      abandon();
      std::rethrow_exception(first_error);
    }
    if (done == local) break;
    if (waiting != local) {
      abandon();
      throw std::logic_error("the chunks of a batch took different paths through the model (" + std::to_string(done) +
                             " finished while " + std::to_string(waiting) + " wait for a shared statistic)");
    }
    try {
      gather_and_combine();
    } catch (...) {
      abandon();
      throw;
    }
  }

  // Every chunk's gradient on every process, summed in chunk order.
  std::vector<int64_t> counts;
  for (int64_t c : rank_chunks_) counts.push_back(c * numel);
  std::vector<float> all(static_cast<size_t>(chunks_ * numel));  // (K, P)
  all_gather(std::span<const float>(grads_), std::span<float>(all), counts);
  gathered_bytes_ = static_cast<int64_t>(all.size() * sizeof(float));
  int64_t offset = 0;
  for (const ParamRef& p : params) {
    const int64_t n = p.tensor.numel();
    float* g = p.tensor.mutable_grad();
    const float* c0 = all.data() + offset;
    std::copy(c0, c0 + n, g);
    for (int64_t k = 1; k < chunks_; ++k) {
      const float* ck = all.data() + k * numel + offset;
#pragma omp parallel for schedule(static) if (n >= 65536)
      for (int64_t i = 0; i < n; ++i) g[i] += ck[i];
    }
    offset += n;
  }

  std::vector<double> mine, tallies(static_cast<size_t>(2 * chunks_));  // (K, 2): loss, correct
  for (const Worker& w : workers_) mine.push_back(w.tally.loss), mine.push_back(static_cast<double>(w.tally.correct));
  for (int64_t& c : counts) c = 0;
  for (size_t r = 0; r < counts.size(); ++r) counts[r] = 2 * rank_chunks_[r];
  all_gather(std::span<const double>(mine), std::span<double>(tallies), counts);
  std::vector<ChunkTally> out(static_cast<size_t>(chunks_));
  for (int64_t k = 0; k < chunks_; ++k) out[k] = {tallies[2 * k], static_cast<int64_t>(tallies[2 * k + 1])};
  return out;
}

}  // namespace qatlab
