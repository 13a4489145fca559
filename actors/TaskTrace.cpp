// The trace buffer of a program and its Chrome trace-event writer.
#include "actors/TaskTrace.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

namespace sbpflow {
namespace {

const std::chrono::steady_clock::time_point kTraceOrigin = std::chrono::steady_clock::now();

int32_t currentThreadId() {
  // One system call per thread, not per task.
  thread_local const int32_t tid = static_cast<int32_t>(::syscall(SYS_gettid));
  return tid;
}

// The "steps" lane; OS thread ids are never 0.
constexpr int32_t kStepLane = 0;

void appendEscaped(std::string &out, const std::string &s) {
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
}

// Microseconds with nanosecond digits, as the format's ts and dur want.
void appendMicros(std::string &out, int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ns / 1000),
                static_cast<long long>(ns % 1000));
  out += buf;
}

void appendCompleteEvent(std::string &out, const std::string &name, const std::string &cat,
                         int64_t beginNs, int64_t endNs, int rank, int32_t tid,
                         const std::string &args) {
  out += ",\n{\"name\":\"";
  appendEscaped(out, name);
  out += "\",\"cat\":\"";
  appendEscaped(out, cat);
  out += "\",\"ph\":\"X\",\"ts\":";
  appendMicros(out, beginNs);
  out += ",\"dur\":";
  appendMicros(out, endNs - beginNs);
  out += ",\"pid\":" + std::to_string(rank) + ",\"tid\":" + std::to_string(tid) + ",\"args\":{" +
         args + "}}";
}

void appendMetadataEvent(std::string &out, const char *name, int rank, int32_t tid,
                         const std::string &args) {
  out += ",\n{\"name\":\"";
  out += name;
  out += "\",\"ph\":\"M\",\"pid\":" + std::to_string(rank) + ",\"tid\":" + std::to_string(tid) +
         ",\"args\":{" + args + "}}";
}

} // namespace

int64_t traceNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                              kTraceOrigin)
      .count();
}

ProgramTrace::ProgramTrace(std::string program, std::vector<TracedTask> tasks, int64_t maxSteps)
    : program_(std::move(program)), tasks_(std::move(tasks)), maxSteps_(maxSteps),
      steps_(static_cast<size_t>(maxSteps)), slots_(static_cast<size_t>(maxSteps) * tasks_.size()) {
}

void ProgramTrace::recordTask(int64_t row, int task, int64_t beginNs, int64_t endNs) {
  TaskSlot &s = slots_[row * static_cast<int64_t>(tasks_.size()) + task];
  s.beginNs = beginNs;
  s.endNs = endNs;
  s.thread = currentThreadId();
}

Status writeChromeTrace(const std::string &path, int rank,
                        const std::vector<const ProgramTrace *> &programs) {
  // Lanes: the threads that ran tasks, named by what ran on them.
  std::map<int32_t, TraceLane> threads;
  for (const ProgramTrace *p : programs)
    for (int64_t row = 0; row < p->stepsTraced(); ++row)
      for (size_t k = 0; k < p->tasks().size(); ++k) {
        const ProgramTrace::TaskSlot &s = p->slot(row, static_cast<int>(k));
        if (s.beginNs >= 0)
          threads.emplace(s.thread, p->tasks()[k].lane);
      }

  std::string out = "{\"traceEvents\":[";
  out += "\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + std::to_string(rank) +
         ",\"tid\":0,\"args\":{\"name\":\"rank " + std::to_string(rank) + "\"}}";
  appendMetadataEvent(out, "process_sort_index", rank, kStepLane,
                      "\"sort_index\":" + std::to_string(rank));
  appendMetadataEvent(out, "thread_name", rank, kStepLane, "\"name\":\"steps\"");
  appendMetadataEvent(out, "thread_sort_index", rank, kStepLane, "\"sort_index\":0");
  for (const auto &[tid, lane] : threads) {
    bool comm = lane == TraceLane::Comm;
    appendMetadataEvent(out, "thread_name", rank, tid,
                        comm ? "\"name\":\"comm\"" : "\"name\":\"compute\"");
    appendMetadataEvent(out, "thread_sort_index", rank, tid,
                        comm ? "\"sort_index\":2" : "\"sort_index\":1");
  }

  for (const ProgramTrace *p : programs) {
    std::string program;
    appendEscaped(program, p->program());
    for (int64_t row = 0; row < p->stepsTraced(); ++row) {
      const ProgramTrace::StepSlot &st = p->step(row);
      const std::string stepArgs =
          "\"program\":\"" + program + "\",\"step\":" + std::to_string(row);
      if (st.beginNs >= 0 && st.endNs >= st.beginNs)
        appendCompleteEvent(out, p->program() + " step " + std::to_string(row), "step", st.beginNs,
                            st.endNs, rank, kStepLane,
                            stepArgs + ",\"epoch\":" + std::to_string(st.epoch) +
                                ",\"batch\":" + std::to_string(st.batch));
      for (size_t k = 0; k < p->tasks().size(); ++k) {
        const ProgramTrace::TaskSlot &s = p->slot(row, static_cast<int>(k));
        if (s.beginNs < 0)
          continue;
        const TracedTask &t = p->tasks()[k];
        std::string args = stepArgs + ",\"task\":" + std::to_string(k);
        if (s.handOffNs >= 0) {
          args += ",\"queued_us\":";
          appendMicros(args, std::max<int64_t>(0, s.beginNs - s.handOffNs));
        }
        appendCompleteEvent(out, t.name, t.op, s.beginNs, s.endNs, rank, s.thread, args);
      }
    }
  }
  out += "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"rank\":" + std::to_string(rank) +
         ",\"clock\":\"steady_clock, microseconds since the worker process started\"" +
         ",\"origin_steady_ns\":" +
         std::to_string(
             std::chrono::duration_cast<std::chrono::nanoseconds>(kTraceOrigin.time_since_epoch())
                 .count()) +
         ",\"bound\":\"the first max_steps steps of each program; later steps are not traced\"" +
         ",\"programs\":[";
  for (size_t i = 0; i < programs.size(); ++i) {
    const ProgramTrace *p = programs[i];
    out += i ? "," : "";
    out += "{\"name\":\"";
    appendEscaped(out, p->program());
    out += "\",\"tasks\":" + std::to_string(p->tasks().size()) +
           ",\"max_steps\":" + std::to_string(p->maxSteps()) +
           ",\"steps_run\":" + std::to_string(p->stepsRun()) +
           ",\"steps_traced\":" + std::to_string(p->stepsTraced()) + "}";
  }
  out += "]}}\n";

  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file)
    return Status::error("cannot open trace file '" + path + "': " + std::strerror(errno));
  file.write(out.data(), static_cast<std::streamsize>(out.size()));
  file.close();
  if (!file)
    return Status::error("cannot write trace file '" + path + "'");
  return Status::ok();
}

} // namespace sbpflow
