// The register protocol (actors/TaskGraph.h) under CAF's deterministic test
// scheduler: task graphs of tiny plans with trivial work that logs each
// firing, driven one stimulus at a time. The log is the same on every run.
#include "actors/Messages.h"
#include "actors/TaskGraph.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/plan/TestPlans.h"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include <map>
#include <set>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

using Log = std::vector<std::string>;

// Plays the caller of a run (StepDone, RunFailed) or, for task actors
// without a step coordinator, the coordinator (TaskDone, TaskFailed).
caf::behavior recorder(caf::event_based_actor *, Log *log) {
  return {
      [=](StepDone &m) { log->push_back("StepDone " + std::to_string(m.step)); },
      [=](RunFailed &m) { log->push_back("RunFailed " + m.error); },
      [=](TaskDone &m) { log->push_back("TaskDone " + std::to_string(m.task)); },
      [=](TaskFailed &m) { log->push_back("TaskFailed " + m.error); },
  };
}

TaskSpec fill(const std::string &name, int out) {
  return makeTask(name, plan::OpKind::Fill, {}, {out}, plan::OpAttrs::FillAttrs);
}
TaskSpec relu(const std::string &name, int in, int out) {
  return makeTask(name, plan::OpKind::Relu, {in}, {out});
}

class RegisterProtocol : public ::testing::Test {
protected:
  RegisterProtocol()
      : sys(configure(cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator &>(sys.scheduler())) {}

  ~RegisterProtocol() override {
    for (const caf::actor &a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::kill);
    sched.run();
  }

  static caf::actor_system_config &configure(caf::actor_system_config &c) {
    configureExecutorSystem(c, 1);
    c.set("scheduler.policy", caf::atom("testing"));
    c.set("logger.file-verbosity", caf::atom("quiet"));
    return c;
  }

  // The task graph of `spec`'s first program. Each task logs "<name><n>"
  // when it fires for the n-th time; the tasks named in `handedOff` log
  // "<name><n> starts" instead and finish only when the test calls
  // complete() (as a collective finishes on the comm thread).
  std::shared_ptr<TaskGraph> graphOf(const PlanSpec &spec,
                                     const std::set<std::string> &handedOff = {}) {
    auto loaded = loadPlanBuffer(build(spec));
    EXPECT_TRUE(loaded) << loaded.status().message();
    if (!loaded)
      return nullptr;
    const plan::Program &prog = *loaded->plan()->programs()->Get(0);
    std::shared_ptr<TaskGraph> graph = taskGraphOf(prog);
    for (size_t k = 0; k < graph->tasks.size(); ++k) {
      std::string name = prog.tasks()->Get(k)->name()->str();
      names[name] = static_cast<int>(k);
      if (handedOff.count(name))
        graph->tasks[k].handOff = [this, name] {
          log.push_back(name + std::to_string(++firings[name]) + " starts");
        };
      else
        graph->tasks[k].run = [this, name] {
          log.push_back(name + std::to_string(++firings[name]));
          auto failure = failAt.find(name);
          if (failure != failAt.end() && failure->second == firings[name])
            return Status::error(name + " broke");
          return Status::ok();
        };
    }
    return graph;
  }

  // Spawns the task actors of `graph`, reporting to `coordinator`.
  void spawnTasks(const std::shared_ptr<TaskGraph> &graph, const caf::actor &coordinator) {
    spawnTaskActors(sys, graph, coordinator);
    spawned.insert(spawned.end(), graph->actors.begin(), graph->actors.end());
  }

  // A step coordinator for `graph` whose hooks log "begin <step>" and
  // "end <step>", and the task actors reporting to it.
  caf::actor spawnRun(const std::shared_ptr<TaskGraph> &graph) {
    StepHooks hooks;
    hooks.begin = [this](int64_t step) { log.push_back("begin " + std::to_string(step)); };
    hooks.end = [this](int64_t step) { log.push_back("end " + std::to_string(step)); };
    caf::actor coordinator = spawnStepCoordinator(sys, graph, hooks);
    spawned.push_back(coordinator);
    spawnTasks(graph, coordinator);
    return coordinator;
  }

  caf::actor spawnRecorder() {
    caf::actor r = sys.spawn(recorder, &log);
    spawned.push_back(r);
    return r;
  }

  // A run of `graph` (spawnRun) and a caller that records its replies, both
  // settled, so that each test starts from a run that has not been asked for.
  void startRun(const std::shared_ptr<TaskGraph> &graph) {
    coordinator = spawnRun(graph);
    caller = spawnRecorder();
    sched.run();
  }

  // The work handed off by task `name` finished.
  void complete(const std::shared_ptr<TaskGraph> &graph, const std::string &name) {
    caf::anon_send(graph->actors[names.at(name)], KernelDone{});
  }

  // The log since the last call.
  Log fresh() {
    Log out(log.begin() + static_cast<std::ptrdiff_t>(seen), log.end());
    seen = log.size();
    return out;
  }

  // Runs everything sent so far to its end; the log it wrote.
  Log settle() {
    sched.run();
    return fresh();
  }

  // `name`'s handed-off work finishes (complete) and all it sets off runs;
  // the log it wrote.
  Log finish(const std::shared_ptr<TaskGraph> &graph, const std::string &name) {
    complete(graph, name);
    return settle();
  }

  // The caller sends `message` to the coordinator and all it sets off runs;
  // the log it wrote.
  template <class Message> Log tell(Message message) {
    caf::send_as(caller, coordinator, std::move(message));
    return settle();
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator &sched;
  std::vector<caf::actor> spawned;
  Log log;
  size_t seen = 0;
  std::map<std::string, int> names, firings;
  std::map<std::string, int> failAt; // task name -> the firing that fails
  caf::actor coordinator, caller;    // set by startRun
};

// P (fill) -> C (relu) over a register of `count` slots; nothing else.
PlanSpec producerConsumer(int count) {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {{"p", {4}}, {"c", {4}}};
  prog.tasks = {fill("P", 0), relu("C", 0, 1)};
  spec.programs.push_back(prog);
  finalize(spec, count);
  return spec;
}

TEST_F(RegisterProtocol, OneSlotHoldsTheProducerUntilTheConsumerFrees) {
  auto graph = graphOf(producerConsumer(1), {"C"});
  ASSERT_TRUE(graph);
  spawnTasks(graph, spawnRecorder());
  sched.run();
  // Two starts for the producer (a source); its consumer is held busy.
  caf::anon_send(graph->actors[names["P"]], StartStep{0});
  caf::anon_send(graph->actors[names["P"]], StartStep{1});
  EXPECT_EQ(settle(), (Log{"P1", "C1 starts"})); // the one slot is taken: P waits
  EXPECT_EQ(finish(graph, "C"), (Log{"P2", "TaskDone 1", "C2 starts"})); // C freed the slot
  EXPECT_EQ(finish(graph, "C"), (Log{"TaskDone 1"}));                    // P has no third start
}

TEST_F(RegisterProtocol, TwoSlotsLetTheProducerRunOneAhead) {
  auto graph = graphOf(producerConsumer(2), {"C"});
  ASSERT_TRUE(graph);
  spawnTasks(graph, spawnRecorder());
  sched.run();
  for (int64_t step = 0; step < 3; ++step)
    caf::anon_send(graph->actors[names["P"]], StartStep{step});
  // P fills both slots before C even starts on the first; not a third.
  EXPECT_EQ(settle(), (Log{"P1", "P2", "C1 starts"}));
  // C takes the second slot at once and frees the first: P runs again.
  EXPECT_EQ(finish(graph, "C"), (Log{"C2 starts", "P3", "TaskDone 1"}));
  EXPECT_EQ(finish(graph, "C"), (Log{"C3 starts", "TaskDone 1"}));
  EXPECT_EQ(finish(graph, "C"), (Log{"TaskDone 1"}));
}

// A and B write unrelated tensors; with `control`, a register without a
// tensor (tensor -1) from A to B.
PlanSpec independentPair(bool control) {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {{"a", {4}}, {"b", {4}}};
  prog.tasks = {fill("A", 0), fill("B", 1)};
  spec.programs.push_back(prog);
  finalize(spec);
  if (control)
    spec.programs[0].registers.push_back({0, -1, {1}, 1});
  return spec;
}

TEST_F(RegisterProtocol, ControlRegisterOrdersIndependentTasks) {
  for (bool control : {false, true}) {
    SCOPED_TRACE(control ? "with the control register" : "without it");
    log.clear();
    seen = 0;
    firings.clear();
    auto graph = graphOf(independentPair(control), {"A"});
    ASSERT_TRUE(graph);
    startRun(graph);
    Log started = tell(RunSteps{1, 0, 1, 1});
    Log finished = finish(graph, "A");
    if (control) {
      EXPECT_EQ(started, (Log{"begin 0", "A1 starts"})); // B waits for A to finish
      EXPECT_EQ(finished, (Log{"B1", "end 0", "StepDone 0"}));
    } else {
      EXPECT_EQ(started, (Log{"begin 0", "A1 starts", "B1"})); // nothing orders them
      EXPECT_EQ(finished, (Log{"end 0", "StepDone 0"}));
    }
  }
}

// S -> M -> {U, X}: U is an update with no output (like SGD), X a metric.
PlanSpec updateAndMetric() {
  PlanSpec spec;
  spec.variables = {{"w", {4}}};
  ProgramSpec prog;
  prog.tensors = {{"s", {4}}, {"m", {4}}, {"x", {4}}};
  TaskSpec update = makeTask("U", plan::OpKind::SgdMomentum, {1}, {}, plan::OpAttrs::SgdAttrs);
  prog.tasks = {fill("S", 0), relu("M", 0, 1), update, relu("X", 1, 2)};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

TEST_F(RegisterProtocol, StepBarrierWaitsForTasksWithoutConsumers) {
  auto graph = graphOf(updateAndMetric(), {"U"});
  ASSERT_TRUE(graph);
  startRun(graph);
  // Every task but the update is done, and nothing of step 11 started.
  EXPECT_EQ(tell(RunSteps{1, 10, 2, 2}), (Log{"begin 10", "S1", "M1", "U1 starts", "X1"}));
  EXPECT_EQ(finish(graph, "U"),
            (Log{"end 10", "begin 11", "StepDone 10", "S2", "M2", "U2 starts", "X2"}));
  EXPECT_EQ(finish(graph, "U"), (Log{"end 11", "StepDone 11"}));
}

TEST_F(RegisterProtocol, CoordinatorStaysWithinTheWindow) {
  auto graph = graphOf(producerConsumer(1));
  ASSERT_TRUE(graph);
  startRun(graph);
  // Two steps without a word from the caller, then it waits.
  EXPECT_EQ(tell(RunSteps{7, 0, 3, 2}), (Log{"begin 0", "P1", "C1", "end 0", "begin 1",
                                             "StepDone 0", "P2", "C2", "end 1", "StepDone 1"}));
  EXPECT_EQ(tell(StepsTaken{6, 2}), Log{}); // another run's: ignored
  EXPECT_EQ(tell(StepsTaken{7, 1}), (Log{"begin 2", "P3", "C3", "end 2", "StepDone 2"}));
  EXPECT_EQ(tell(StepsTaken{7, 3}), Log{}); // the run is over
}

// S -> M -> X and S -> P -> Q -> R, beside A, a source and sink of its own.
PlanSpec chainBesideOne() {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {{"s", {4}}, {"m", {4}}, {"x", {4}}, {"a", {4}},
                  {"p", {4}}, {"q", {4}}, {"r", {4}}};
  prog.tasks = {fill("S", 0),    relu("M", 0, 1), relu("X", 1, 2), fill("A", 3),
                relu("P", 0, 4), relu("Q", 4, 5), relu("R", 5, 6)};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

TEST_F(RegisterProtocol, FirstErrorHaltsEveryTaskBeforeTheCallerHearsOfIt) {
  failAt["M"] = 2;
  auto graph = graphOf(chainBesideOne(), {"A"});
  ASSERT_TRUE(graph);
  startRun(graph);
  EXPECT_EQ(tell(RunSteps{1, 0, 3, 3}),
            (Log{"begin 0", "S1", "A1 starts", "M1", "P1", "X1", "Q1", "R1"}));
  complete(graph, "A");
  // The caller runs first whenever it has mail, and still hears of the
  // error only once every task has halted: M fails in step 1 while A's work
  // is out and P -> Q -> R runs on; X never fires, R no more either (Q's
  // data reaches it after its Halt).
  while (sched.has_job()) {
    sched.prioritize(caller);
    sched.run_once();
  }
  EXPECT_EQ(fresh(), (Log{"end 0", "begin 1", "StepDone 0", "S2", "A2 starts", "M2", "P2", "Q2",
                          "RunFailed M broke"}));
  EXPECT_EQ(finish(graph, "A"), Log{}); // late: changes nothing
  EXPECT_EQ(tell(RunSteps{2, 3, 1, 1}),
            (Log{"RunFailed M broke"})); // a failed graph runs nothing more
}

TEST_F(RegisterProtocol, StopRunEndsTheRun) {
  auto graph = graphOf(producerConsumer(1));
  ASSERT_TRUE(graph);
  startRun(graph);
  EXPECT_EQ(tell(RunSteps{1, 0, 5, 1}), (Log{"begin 0", "P1", "C1", "end 0", "StepDone 0"}));
  caf::send_as(caller, coordinator, StopRun{}); // ahead of the next message, in one batch
  EXPECT_EQ(tell(StepsTaken{1, 1}), (Log{"RunFailed the run was stopped by its caller"}));
}

} // namespace
