// distributed.h: the processes of one run started by an MPI launcher (`mpirun -np N qatlab ...`) and the
// few collectives that training and sweeps need. The only unit that speaks MPI: distributed_mpi.cpp when
// CMake found MPI, distributed_single.cpp otherwise (one process, rank 0 of 1, every collective a copy),
// both behind this one interface, so that nothing else needs to know which was built.
//
// A process started without a launcher stays single even in an MPI build: MPI is initialised only when
// the launcher's environment says the process is one of several (Open MPI's OMPI_COMM_WORLD_SIZE, or
// PMI_SIZE / PMIX_RANK of other launchers), so the single-process program runs exactly as before.
//
// The rank and size are facts of the process, fixed once by init() (as MPI_COMM_WORLD is MPI's own global):
// the one place in qatlab where such a fact is read rather than passed.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace qatlab {

// Whether this build can run as several processes (CMake found MPI: QATLAB_WITH_MPI).
bool distributed_available();
// Initialises MPI when launched as one of several processes; call once, first thing in main().
void distributed_init(int* argc, char*** argv);
// Ends MPI cleanly (every process must call it) where init started it; nothing otherwise.
void distributed_finalize();
int world_rank();   // 0..world_size()-1; 0 in a single process
int world_size();   // 1 in a single process
// Processes of this run on this machine (shared memory), this one included: the default thread count
// divides the cores among them.
int local_size();

// Within its scope this process acts as a run of its own, rank 0 of 1, its collectives copies: each
// cell of a distributed sweep is trained by one process. Main thread only; scopes may nest.
class ProcessLocalScope {
 public:
  ProcessLocalScope();
  ~ProcessLocalScope();
  ProcessLocalScope(const ProcessLocalScope&) = delete;
  ProcessLocalScope& operator=(const ProcessLocalScope&) = delete;

 private:
  bool saved_;
};

// Ends every process of the run at once with this exit code: for a failure on some processes only, where
// the others would wait forever in their next collective. Returns (does nothing) in a single process.
void abort_all(int code);

// Every process calls these at the same point with the same arguments where noted.
void barrier();
// all receives every process's values, process 0's first; counts[r] is process r's count (the same
// vector everywhere), mine.size() == counts[world_rank()], all.size() == their sum.
void all_gather(std::span<const float> mine, std::span<float> all, std::span<const int64_t> counts);
void all_gather(std::span<const double> mine, std::span<double> all, std::span<const int64_t> counts);
// Process 0's text, on every process.
std::string broadcast_text(const std::string& text_on_rank0);
// Every process's text, in rank order, on process 0 (empty elsewhere).
std::vector<std::string> gather_texts(const std::string& mine);

// A counter on process 0 that every process draws from atomically (MPI one-sided fetch-and-add): a work
// queue with no server. next() returns 0, 1, 2, ... across all processes, each value once. Collective
// construction and destruction.
class SharedCounter {
 public:
  SharedCounter();
  ~SharedCounter();
  SharedCounter(const SharedCounter&) = delete;
  SharedCounter& operator=(const SharedCounter&) = delete;
  int64_t next();

 private:
  struct Impl;
  Impl* impl_ = nullptr;
};

// An error every process detected at the same point from the same shared data (a NaN loss after the
// gradient exchange, a usage error): each process ends on its own with the exit code, only process 0
// printing, instead of aborting the run from one process.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace qatlab
