// profiler.h: where a training step's time goes, per layer and per op, forward and backward.
//
// A Profiler collects while a ProfilerSession for it is open on the calling thread (the thread that
// runs the model; ops parallelise inside themselves). Off, every hook is one thread-local pointer test.
//
// Attribution. Modules open a scope named by their dotted name while they run (Module::operator()),
// and every op recorded for autograd carries the innermost scope and its own name:
// - forward: the time from the previous mark on this thread (an op recorded, a scope opened or closed)
//   to the op's record_op call is that op's forward time. Work without an op of its own (an observer's
//   scan before its fake_quantize) is so charged to the op that follows it; time that ends at a scope
//   boundary is charged to the enclosing scope as "(other)";
// - backward: each op's backward closure is timed as it runs; an op may split its backward into named
//   parts (conv2d: "input_grad" and "weight_grad") with profile_part().
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace qatlab {

class Profiler {
 public:
  struct Row {
    std::string scope;  // dotted module name ("" for ops outside any named module)
    std::string op;     // op name, or "op.part" for a named part of an op's backward
    double forward_s = 0, backward_s = 0;
    int64_t calls = 0;  // forward calls (parts: backward calls)
  };

  // Names the modules of a model: a module reached through `name` opens a scope of that name.
  void name_module(const void* module, std::string name) { names_[module] = std::move(name); }
  const std::string* name_of(const void* module) const;

  void add_forward(const std::string& scope, const std::string& op, double seconds);
  void add_backward(const std::string& scope, const std::string& op, double seconds);
  void clear() { rows_.clear(); }

  // Rows in the order their (scope, op) first appeared: execution order of the first step.
  std::vector<Row> rows() const;

 private:
  Row& row(const std::string& scope, const std::string& op);
  std::map<const void*, std::string> names_;
  std::map<std::pair<std::string, std::string>, size_t> index_;
  std::vector<Row> rows_;
};

// Makes `profiler` the calling thread's active profiler for the session's lifetime.
class ProfilerSession {
 public:
  explicit ProfilerSession(Profiler& profiler);
  ~ProfilerSession();
  ProfilerSession(const ProfilerSession&) = delete;
  ProfilerSession& operator=(const ProfilerSession&) = delete;

 private:
  Profiler* previous_;
};

// The calling thread's active profiler, or null.
Profiler* active_profiler();

// Opens the scope named for `module` (if the active profiler knows it) until destroyed.
class ProfileScope {
 public:
  explicit ProfileScope(const void* module);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  bool open_ = false;
};

// The innermost open scope's name ("" when none), for record_op to store in the node.
const std::string& profile_current_scope();
// record_op's hook: charges the time since the last mark to (current scope, op) as forward time.
void profile_forward_mark(const char* op);
// Sets the mark to now without charging anything: the time since the last mark was not forward work
// (Tensor::backward calls it when it ends; an optimizer step should too).
void profile_reset_mark();

// Times a named part of the backward pass of the op being run (between construction and destruction).
class ProfilePart {
 public:
  explicit ProfilePart(const char* part);
  ~ProfilePart();
  ProfilePart(const ProfilePart&) = delete;
  ProfilePart& operator=(const ProfilePart&) = delete;

 private:
  const char* part_;
  std::chrono::steady_clock::time_point start_;
};

// Tensor::backward's hook: which op's backward runs now, so its parts are named after it.
void profile_set_backward_op(const std::string* scope, const char* op);

}  // namespace qatlab
