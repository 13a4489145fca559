// The task actors and the step coordinator of the register protocol.
#include "actors/TaskGraph.h"

#include "runtime/plan/plan_generated.h"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <algorithm>

namespace sbpflow {
namespace {

class TaskActor : public caf::event_based_actor {
public:
  TaskActor(caf::actor_config &cfg, std::shared_ptr<TaskGraph> graph, int task,
            caf::actor coordinator)
      : caf::event_based_actor(cfg), graph_(std::move(graph)), task_(task),
        coordinator_(std::move(coordinator)) {
    const TaskNode &t = graph_->tasks[task_];
    full_.assign(t.inRegs.size(), 0);
    produced_.assign(t.outRegs.size(), 0);
    for (int r : t.outRegs) {
      freed_.emplace_back(graph_->registers[r].consumers.size(), 0);
      if (!graph_->registers[r].consumers.empty())
        sink_ = false;
    }
  }

  const char *name() const override { return "sbpflow.task"; }

  caf::behavior make_behavior() override {
    return {
        [this](StartStep &) {
          ++started_;
          fire();
        },
        [this](RegisterFull &m) {
          const std::vector<int> &in = node().inRegs;
          for (size_t i = 0; i < in.size(); ++i)
            if (in[i] == m.reg)
              ++full_[i];
          fire();
        },
        [this](RegisterFree &m) {
          const std::vector<int> &out = node().outRegs;
          for (size_t i = 0; i < out.size(); ++i) {
            if (out[i] != m.reg)
              continue;
            const std::vector<int> &consumers = graph_->registers[m.reg].consumers;
            for (size_t c = 0; c < consumers.size(); ++c)
              if (consumers[c] == m.consumer)
                ++freed_[i][c];
          }
          fire();
        },
        [this](KernelDone &) {
          if (halted_)
            return;
          running_ = false;
          finish();
          fire();
        },
        [this](KernelFailed &m) {
          if (!halted_)
            fail(std::move(m.error));
        },
        [this](Halt &) {
          // A compute kernel runs inside a message handler: none runs now.
          halted_ = true;
          send(coordinator_, Halted{});
        },
    };
  }

  void on_exit() override {
    // graph_->actors holds this actor: let the cycle go.
    graph_.reset();
    coordinator_ = nullptr;
  }

private:
  const TaskNode &node() const { return graph_->tasks[task_]; }

  bool ready() const {
    if (running_ || halted_)
      return false;
    // Only a source needs a start: inputs fill once per step of their producers.
    if (node().inRegs.empty() && fired_ >= started_)
      return false;
    for (int64_t f : full_)
      if (f == 0)
        return false;
    const std::vector<int> &out = node().outRegs;
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t slowest =
          freed_[i].empty() ? produced_[i] : *std::min_element(freed_[i].begin(), freed_[i].end());
      if (produced_[i] - slowest >= graph_->registers[out[i]].count)
        return false;
    }
    return true;
  }

  void fire() {
    // Compute work finishes inline, so a task may fire again right away
    // (with register counts > 1 and several starts).
    while (ready()) {
      ++fired_;
      for (int64_t &f : full_)
        --f;
      for (int64_t &p : produced_)
        ++p;
      const TaskNode &t = node();
      if (t.handOff) {
        running_ = true;
        t.handOff();
        return;
      }
      if (t.run) {
        Status s = t.run();
        if (!s) {
          fail(s.message());
          return;
        }
      }
      finish();
    }
  }

  void finish() {
    const TaskNode &t = node();
    for (int r : t.outRegs)
      for (int c : graph_->registers[r].consumers)
        send(graph_->actors[c], RegisterFull{r});
    for (int r : t.inRegs)
      send(graph_->actors[graph_->registers[r].producer], RegisterFree{r, task_});
    if (sink_)
      send(coordinator_, TaskDone{task_});
  }

  void fail(std::string error) {
    halted_ = true;
    send(coordinator_, TaskFailed{task_, std::move(error)});
  }

  std::shared_ptr<TaskGraph> graph_;
  const int task_;
  caf::actor coordinator_;
  bool sink_ = true, running_ = false, halted_ = false;
  int64_t started_ = 0, fired_ = 0;
  std::vector<int64_t> full_;               // per input register: slots holding data
  std::vector<int64_t> produced_;           // per output register: slots filled so far
  std::vector<std::vector<int64_t>> freed_; // per output register, per consumer
};

// Counts only the sinks' TaskDone: every other task reaches a sink through
// registers, and a consumer fires only after its producers sent RegisterFull,
// which they do once their work is done. So when every sink finished a step,
// every task did (each fires once per step: the sources once per StartStep,
// the rest once per firing of their producers).
class StepCoordinator : public caf::event_based_actor {
public:
  StepCoordinator(caf::actor_config &cfg, std::shared_ptr<TaskGraph> graph, StepHooks hooks)
      : caf::event_based_actor(cfg), graph_(std::move(graph)), hooks_(std::move(hooks)) {
    std::vector<bool> read(graph_->tasks.size(), false);
    for (const RegisterNode &r : graph_->registers)
      if (!r.consumers.empty())
        read[r.producer] = true;
    for (size_t k = 0; k < graph_->tasks.size(); ++k) {
      if (graph_->tasks[k].inRegs.empty())
        sources_.push_back(static_cast<int>(k));
      if (!read[k])
        ++sinks_;
    }
  }

  const char *name() const override { return "sbpflow.step_coordinator"; }

  caf::behavior make_behavior() override {
    return {
        [this](RunSteps &m) {
          caller_ = caf::actor_cast<caf::actor>(current_sender());
          if (halted_) {
            send(caller_, RunFailed{error_});
            return;
          }
          run_ = m.run;
          first_ = m.first;
          count_ = m.count;
          window_ = std::max<int64_t>(1, m.window);
          started_ = taken_ = 0;
          startSteps();
        },
        [this](TaskDone &) {
          if (halted_ || !inStep_ || --pending_ > 0)
            return;
          inStep_ = false;
          endStep();
          startSteps();
        },
        [this](StepsTaken &m) {
          if (m.run != run_)
            return;
          taken_ = std::max(taken_, m.taken);
          startSteps();
        },
        [this](TaskFailed &m) { halt(std::move(m.error)); },
        [this](StopRun &) { halt("the run was stopped by its caller"); },
        [this](Halted &) {
          if (--haltsPending_ == 0)
            send(caller_, RunFailed{error_});
        },
    };
  }

  void on_exit() override {
    graph_.reset();
    hooks_ = StepHooks();
    caller_ = nullptr;
  }

private:
  void startSteps() {
    while (!halted_ && !inStep_ && started_ < count_ && started_ < taken_ + window_) {
      step_ = first_ + started_++;
      if (hooks_.begin)
        hooks_.begin(step_);
      if (sinks_ == 0) { // no tasks
        endStep();
        continue;
      }
      inStep_ = true;
      pending_ = sinks_;
      for (int k : sources_)
        send(graph_->actors[k], StartStep{step_});
    }
  }

  void endStep() {
    if (hooks_.check)
      if (Status s = hooks_.check(step_); !s) {
        halt(s.message());
        return;
      }
    if (hooks_.end)
      hooks_.end(step_);
    send(caller_, StepDone{step_});
  }

  void halt(std::string error) {
    if (halted_)
      return;
    halted_ = true;
    inStep_ = false;
    error_ = std::move(error);
    haltsPending_ = static_cast<int64_t>(graph_->actors.size());
    if (haltsPending_ == 0) {
      send(caller_, RunFailed{error_});
      return;
    }
    for (const caf::actor &a : graph_->actors)
      send(a, Halt{});
  }

  std::shared_ptr<TaskGraph> graph_;
  StepHooks hooks_;
  std::vector<int> sources_;
  int64_t sinks_ = 0;
  caf::actor caller_;
  int64_t run_ = 0, first_ = 0, count_ = 0, window_ = 1;
  int64_t started_ = 0, taken_ = 0; // steps of this run started / consumed by the caller
  int64_t step_ = 0, pending_ = 0;  // the step in progress, its sinks still running
  bool inStep_ = false, halted_ = false;
  std::string error_;
  int64_t haltsPending_ = 0;
};

} // namespace

std::shared_ptr<TaskGraph> taskGraphOf(const plan::Program &program) {
  auto graph = std::make_shared<TaskGraph>();
  graph->tasks.resize(program.tasks()->size());
  for (size_t r = 0; r < program.registers()->size(); ++r) {
    const plan::Register *reg = program.registers()->Get(r);
    RegisterNode node;
    node.producer = reg->producer();
    node.count = reg->count();
    for (int consumer : *reg->consumers())
      if (std::find(node.consumers.begin(), node.consumers.end(), consumer) == node.consumers.end())
        node.consumers.push_back(consumer);
    graph->tasks[node.producer].outRegs.push_back(static_cast<int>(r));
    for (int c : node.consumers)
      graph->tasks[c].inRegs.push_back(static_cast<int>(r));
    graph->registers.push_back(std::move(node));
  }
  return graph;
}

caf::actor spawnStepCoordinator(caf::actor_system &system, std::shared_ptr<TaskGraph> graph,
                                StepHooks hooks) {
  return system.spawn<StepCoordinator>(std::move(graph), std::move(hooks));
}

void spawnTaskActors(caf::actor_system &system, const std::shared_ptr<TaskGraph> &graph,
                     const caf::actor &coordinator) {
  // Every actor needs every other's handle: spawn all, then publish the list
  // (the first message to any of them orders the two).
  std::vector<caf::actor> actors;
  actors.reserve(graph->tasks.size());
  for (size_t k = 0; k < graph->tasks.size(); ++k)
    actors.push_back(system.spawn<TaskActor>(graph, static_cast<int>(k), coordinator));
  graph->actors = std::move(actors);
}

void reportCollective(TaskGraph *graph, int task, const Status &s) {
  if (s)
    caf::anon_send(graph->actors[task], KernelDone{});
  else
    caf::anon_send(graph->actors[task], KernelFailed{s.message()});
}

std::string awaitSteps(caf::actor_system &system, const caf::actor &coordinator,
                       const RunSteps &run, const std::vector<double> &metricRing,
                       size_t metricCount,
                       const std::function<void(int64_t, const std::vector<double> &)> &onStep,
                       const std::function<void()> &stopped) {
  const size_t n = metricCount;
  std::vector<double> metrics(n);
  caf::scoped_actor self{system};
  self->send(coordinator, run);
  // One wake-up of this thread per step: the coordinator runs the steps
  // back to back and only reports each one (its metrics wait in the ring).
  int64_t taken = 0;
  std::string error;
  auto onDone = [&](StepDone &d) {
    const double *row = metricRing.data() + ((d.step - run.first) % run.window) * n;
    std::copy(row, row + n, metrics.begin());
    ++taken;
    if (taken % (run.window / 2) == 0)
      self->send(coordinator, StepsTaken{run.run, taken});
    if (onStep)
      onStep(d.step, metrics);
  };
  auto onFailed = [&](RunFailed &f) { error = std::move(f.error); };
  try {
    while (taken < run.count && error.empty())
      self->receive(onDone, onFailed);
  } catch (...) {
    // onStep threw while later steps may be running (and reading the data
    // source): stop them before unwinding.
    self->send(coordinator, StopRun{});
    error.clear();
    while (error.empty())
      self->receive([](StepDone &) {}, onFailed);
    stopped();
    throw;
  }
  return error;
}

void stopActors(caf::actor_system &system, const std::vector<caf::actor> &actors) {
  for (auto &a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  if (!actors.empty()) {
    caf::scoped_actor self{system};
    self->wait_for(actors);
  }
}

} // namespace sbpflow
