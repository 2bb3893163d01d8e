// profiler.cpp: the per-thread profiling state and the attribution rules written in profiler.h.
#include "core/profiler.h"

namespace qatlab {
namespace {

using Clock = std::chrono::steady_clock;

// The state of the thread that runs the model. Only touched while a profiler is active.
struct ThreadState {
  Profiler* profiler = nullptr;
  std::vector<const std::string*> scopes;  // innermost last
  Clock::time_point mark;
  const std::string* backward_scope = nullptr;
  const char* backward_op = nullptr;
};

thread_local ThreadState t_state;
const std::string kNoScope;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Charges the time since the last mark to (current scope, op) and sets a new mark.
void charge(const char* op) {
  const Clock::time_point now = Clock::now();
  t_state.profiler->add_forward(profile_current_scope(), op, std::chrono::duration<double>(now - t_state.mark).count());
  t_state.mark = now;
}

}  // namespace

const std::string* Profiler::name_of(const void* module) const {
  auto it = names_.find(module);
  return it == names_.end() ? nullptr : &it->second;
}

Profiler::Row& Profiler::row(const std::string& scope, const std::string& op) {
  auto [it, inserted] = index_.try_emplace({scope, op}, rows_.size());
  if (inserted) rows_.push_back(Row{scope, op});
  return rows_[it->second];
}

void Profiler::add_forward(const std::string& scope, const std::string& op, double seconds) {
  Row& r = row(scope, op);
  r.forward_s += seconds;
  r.calls += 1;
}

void Profiler::add_backward(const std::string& scope, const std::string& op, double seconds) {
  row(scope, op).backward_s += seconds;
}

std::vector<Profiler::Row> Profiler::rows() const { return rows_; }

ProfilerSession::ProfilerSession(Profiler& profiler) : previous_(t_state.profiler) {
  t_state.profiler = &profiler;
  t_state.mark = Clock::now();
}

ProfilerSession::~ProfilerSession() { t_state.profiler = previous_; }

Profiler* active_profiler() { return t_state.profiler; }

ProfileScope::ProfileScope(const void* module) {
  if (!t_state.profiler) return;
  const std::string* name = t_state.profiler->name_of(module);
  if (!name) return;
  charge("(other)");
  t_state.scopes.push_back(name);
  open_ = true;
}

ProfileScope::~ProfileScope() {
  if (!open_ || !t_state.profiler) return;
  charge("(other)");
  t_state.scopes.pop_back();
}

const std::string& profile_current_scope() { return t_state.scopes.empty() ? kNoScope : *t_state.scopes.back(); }

void profile_forward_mark(const char* op) {
  if (t_state.profiler) charge(op);
}

void profile_reset_mark() {
  if (t_state.profiler) t_state.mark = Clock::now();
}

ProfilePart::ProfilePart(const char* part) : part_(part), start_(Clock::now()) {}

ProfilePart::~ProfilePart() {
  if (!t_state.profiler || !t_state.backward_op) return;
  t_state.profiler->add_backward(t_state.backward_scope ? *t_state.backward_scope : kNoScope,
                                 std::string(t_state.backward_op) + "." + part_, seconds_since(start_));
}

void profile_set_backward_op(const std::string* scope, const char* op) {
  t_state.backward_scope = scope;
  t_state.backward_op = op;
}

}  // namespace qatlab
