// distributed_single.cpp: distributed.h for a build without MPI: one process, rank 0 of 1.
#include <algorithm>

#include "core/distributed.h"

namespace qatlab {

namespace {

template <typename T>
void copy_mine(std::span<const T> mine, std::span<T> all, std::span<const int64_t> counts) {
  if (counts.size() != 1 || static_cast<int64_t>(mine.size()) != counts[0] || all.size() != mine.size())
    throw std::invalid_argument("all_gather: counts do not match the single process");
  std::copy(mine.begin(), mine.end(), all.begin());
}

}  // namespace

bool distributed_available() { return false; }
void distributed_init(int*, char***) {}
void distributed_finalize() {}
int world_rank() { return 0; }
int world_size() { return 1; }
int local_size() { return 1; }
void abort_all(int) {}
ProcessLocalScope::ProcessLocalScope() : saved_(false) {}
ProcessLocalScope::~ProcessLocalScope() {}
void barrier() {}

void all_gather(std::span<const float> mine, std::span<float> all, std::span<const int64_t> counts) {
  copy_mine(mine, all, counts);
}

void all_gather(std::span<const double> mine, std::span<double> all, std::span<const int64_t> counts) {
  copy_mine(mine, all, counts);
}

std::string broadcast_text(const std::string& text_on_rank0) { return text_on_rank0; }
std::vector<std::string> gather_texts(const std::string& mine) { return {mine}; }

struct SharedCounter::Impl {
  int64_t value = 0;
};
SharedCounter::SharedCounter() : impl_(new Impl) {}
SharedCounter::~SharedCounter() { delete impl_; }
int64_t SharedCounter::next() { return impl_->value++; }

}  // namespace qatlab
