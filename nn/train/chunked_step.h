// chunked_step.h: one training step over a global batch cut into a fixed number of chunks, each chunk's
// forward and backward computed on its own, by whichever process of the run holds it, and the chunks'
// gradients summed in chunk order on every process: the weights after the step are the same bit for
// bit whether 1 process or N computed the chunks (`mpirun -np N qatlab train|qat`).
//
// How. Chunk k of a batch of n rows holds rows [k n / K, (k + 1) n / K) (K = TrainSettings::grad_chunks,
// --grad-chunks); process r of N holds chunks [r K / N, (r + 1) K / N). A process runs its chunks on
// worker threads, one at a time, each until its model reaches a statistic that stateful layers share
// (core/batch_sync.h: observers' ranges, learned quantizers' first batch, batch norm's running
// statistics): when every chunk of the process has reached it, the main thread gathers every process's
// chunks' values (MPI), runs the layer's update once and lets the chunks go on, in order. After its
// backward a chunk's gradient is copied aside; then every process gathers every chunk's gradient and adds
// them, chunk 0 to K-1, into the parameters' gradients. What this costs: each process receives K
// gradients per step (K x the parameter bytes), and K forward / backward passes of n / K rows run slower
// than one of n rows.
//
// Shape letters: K chunks, P parameters (all of the model's, flattened), N batch rows.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "core/batch_sync.h"
#include "nn/optim.h"

namespace qatlab {

// What one chunk's forward and backward measured (for the progress line and the NaN check).
struct ChunkTally {
  double loss = 0.0;    // the chunk's loss (mean over its rows, without the step's extra terms)
  int64_t correct = 0;  // rows whose top-1 class is the label
};

class ChunkedStep : public BatchSync {
 public:
  // chunks: K, the same on every process; threads: OpenMP threads for each chunk's work (as --threads).
  ChunkedStep(int64_t chunks, int threads);
  ~ChunkedStep() override;
  ChunkedStep(const ChunkedStep&) = delete;
  ChunkedStep& operator=(const ChunkedStep&) = delete;

  int64_t chunks() const override { return chunks_; }
  int64_t first_chunk() const { return first_; }  // this process's chunks: [first_chunk, end_chunk)
  int64_t end_chunk() const { return end_; }
  // Rows [chunk_begin, chunk_end) of a batch of n rows belong to chunk k.
  int64_t chunk_begin(int64_t k, int64_t rows) const { return k * rows / chunks_; }

  // One step: runs work(k, begin, end) for each of this process's chunks k (rows [begin, end) of a batch
  // of `rows`) on the worker threads; work does the chunk's forward and backward into the parameters'
  // gradients, which are zeroed before each chunk. Then every parameter's gradient is the sum, in chunk
  // order, of every chunk's. Returns every chunk's tally, in chunk order. `stream` numbers the batch in
  // the run (for chunk_stream()). A chunk that throws abandons the step; the first error (in chunk
  // order) is rethrown.
  using Work = std::function<ChunkTally(int64_t chunk, int64_t begin, int64_t end)>;
  std::vector<ChunkTally> run(int64_t rows, uint64_t stream, const std::vector<ParamRef>& params, const Work& work);

  // BatchSync, for the model's layers on the worker threads.
  void exchange(std::span<const double> mine, const Combine& combine) override;
  int64_t chunk() const override;
  uint64_t chunk_stream() const override;

  // Bytes of gradient this process received in the last step (K x P floats).
  int64_t gathered_bytes() const { return gathered_bytes_; }

 private:
  enum class State { Idle, Running, AtExchange, Done, Failed };
  struct Worker {
    std::thread thread;
    State state = State::Idle;
    std::vector<double> payload;        // at an exchange: its values
    const Combine* combine = nullptr;   // at an exchange: its update
    std::exception_ptr error;
    ChunkTally tally;
  };
  void worker_loop(int w);
  void resume(int w);           // main thread: lets worker w run until it yields; waits for that
  void gather_and_combine();    // main thread: every worker is at an exchange
  void abandon();               // main thread: ends the step after a failure

  int64_t chunks_, first_, end_;
  int threads_;
  std::vector<Worker> workers_;  // one per chunk of this process
  std::vector<int64_t> rank_chunks_;  // (world size) chunks held by each process

  // One step's job, read by the workers.
  const Work* work_ = nullptr;
  const std::vector<ParamRef>* params_ = nullptr;
  int64_t rows_ = 0;
  uint64_t stream_ = 0;
  std::vector<float> grads_;   // (local chunks, P) each chunk's gradient, copied after its backward

  std::mutex mutex_;
  std::condition_variable cv_;
  int active_ = -1;            // the worker allowed to run; -1: the main thread
  bool cancel_ = false;        // set when the step is abandoned: waiting workers throw
  bool quit_ = false;          // the destructor ends the workers
  int64_t gathered_bytes_ = 0;
};

}  // namespace qatlab
