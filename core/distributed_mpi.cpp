// distributed_mpi.cpp: distributed.h on MPI (built when CMake finds it; distributed_single.cpp otherwise).
#include <mpi.h>

#include <climits>
#include <cstdlib>

#include "core/distributed.h"

namespace qatlab {

namespace {

// Set once by distributed_init (see distributed.h for why these are process facts).
bool g_started = false;
int g_rank = 0, g_size = 1, g_local_size = 1;
bool g_local_only = false;  // inside a ProcessLocalScope

// Whether collectives go through MPI now.
bool collective() { return g_started && !g_local_only; }

bool launched_as_several() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name)) return true;
  return false;
}

std::vector<int> int_counts(std::span<const int64_t> counts, std::vector<int>& displs) {
  std::vector<int> out(counts.size());
  displs.assign(counts.size(), 0);
  int64_t at = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] < 0 || counts[r] > INT_MAX || at > INT_MAX)
      throw std::invalid_argument("all_gather: " + std::to_string(counts[r]) + " values from process " +
                                  std::to_string(r) + " exceed what one MPI message carries");
    out[r] = static_cast<int>(counts[r]);
    displs[r] = static_cast<int>(at);
    at += counts[r];
  }
  return out;
}

template <typename T>
void gather_all(std::span<const T> mine, std::span<T> all, std::span<const int64_t> counts, MPI_Datatype type) {
  if (static_cast<int64_t>(counts.size()) != world_size() ||
      static_cast<int64_t>(mine.size()) != counts[world_rank()])
    throw std::invalid_argument("all_gather: counts do not match the processes");
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  if (static_cast<int64_t>(all.size()) != total) throw std::invalid_argument("all_gather: wrong output size");
  if (!collective()) {
    std::copy(mine.begin(), mine.end(), all.begin());
    return;
  }
  std::vector<int> displs;
  const std::vector<int> n = int_counts(counts, displs);
  MPI_Allgatherv(mine.data(), static_cast<int>(mine.size()), type, all.data(), n.data(), displs.data(), type,
                 MPI_COMM_WORLD);
}

}  // namespace

bool distributed_available() { return true; }

void distributed_init(int* argc, char*** argv) {
  if (g_started || !launched_as_several()) return;
  // Only the main thread calls MPI (chunk workers hand their exchanges to it).
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &g_local_size);
  MPI_Comm_free(&local);
}

void distributed_finalize() {
  if (!g_started) return;
  MPI_Finalize();
  g_started = false;
}

int world_rank() { return g_local_only ? 0 : g_rank; }
int world_size() { return g_local_only ? 1 : g_size; }
int local_size() { return g_local_size; }

ProcessLocalScope::ProcessLocalScope() : saved_(g_local_only) { g_local_only = true; }
ProcessLocalScope::~ProcessLocalScope() { g_local_only = saved_; }

void abort_all(int code) {
  if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

void barrier() {
  if (collective()) MPI_Barrier(MPI_COMM_WORLD);
}

void all_gather(std::span<const float> mine, std::span<float> all, std::span<const int64_t> counts) {
  gather_all(mine, all, counts, MPI_FLOAT);
}

void all_gather(std::span<const double> mine, std::span<double> all, std::span<const int64_t> counts) {
  gather_all(mine, all, counts, MPI_DOUBLE);
}

std::string broadcast_text(const std::string& text_on_rank0) {
  if (!collective()) return text_on_rank0;
  int64_t n = g_rank == 0 ? static_cast<int64_t>(text_on_rank0.size()) : 0;
  MPI_Bcast(&n, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
  std::string text = g_rank == 0 ? text_on_rank0 : std::string(static_cast<size_t>(n), '\0');
  MPI_Bcast(text.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  return text;
}

std::vector<std::string> gather_texts(const std::string& mine) {
  if (!collective()) return {mine};
  const int n = static_cast<int>(mine.size());
  std::vector<int> sizes(g_rank == 0 ? g_size : 0), displs;
  MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string all;
  if (g_rank == 0) {
    int at = 0;
    for (int s : sizes) displs.push_back(at), at += s;
    all.resize(static_cast<size_t>(at));
  }
  MPI_Gatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  std::vector<std::string> out;
  for (int r = 0; g_rank == 0 && r < g_size; ++r) out.push_back(all.substr(displs[r], sizes[r]));
  return out;
}

struct SharedCounter::Impl {
  int64_t value = 0;            // the counter without MPI
  int64_t* memory = nullptr;    // process 0's counter, in the window's own memory
  MPI_Win window = MPI_WIN_NULL;
};

SharedCounter::SharedCounter() : impl_(new Impl) {
  if (!collective()) return;
  // Memory MPI allocates (not MPI_Win_create over ours): on one machine Open MPI then serves fetch-and-add
  // from shared memory, without waiting for process 0 to enter MPI.
  MPI_Win_allocate(g_rank == 0 ? sizeof(int64_t) : 0, sizeof(int64_t), MPI_INFO_NULL, MPI_COMM_WORLD,
                   &impl_->memory, &impl_->window);
  if (g_rank == 0) {
    MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, impl_->window);
    *impl_->memory = 0;
    MPI_Win_unlock(0, impl_->window);
  }
  MPI_Barrier(MPI_COMM_WORLD);  // nobody draws before the counter is 0
}

SharedCounter::~SharedCounter() {
  if (impl_->window != MPI_WIN_NULL) MPI_Win_free(&impl_->window);
  delete impl_;
}

int64_t SharedCounter::next() {
  if (impl_->window == MPI_WIN_NULL) return impl_->value++;
  const int64_t one = 1;
  int64_t got = 0;
  MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, impl_->window);
  MPI_Fetch_and_op(&one, &got, MPI_INT64_T, 0, 0, MPI_SUM, impl_->window);
  MPI_Win_unlock(0, impl_->window);
  return got;
}

}  // namespace qatlab
