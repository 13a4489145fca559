// The node daemon: one event-based actor published on HOST:PORT. A driver
// says hello, gets a single-use nonce, and sends StartJob signed with the
// shared secret; the node checks version, nonce and MAC, starts the rank
// processes and watches them and the driver until the job ends.
#include "runtime/cluster/Node.h"

#include "runtime/cluster/Auth.h"
#include "runtime/cluster/Messages.h"
#include "runtime/cluster/Processes.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <memory>

namespace sbpflow::cluster {
namespace {

using node_tick_atom = caf::atom_constant<caf::atom("scnodetick")>;
using Clock = std::chrono::steady_clock;

constexpr auto kTick = std::chrono::milliseconds(200);
constexpr auto kNonceLifetime = std::chrono::seconds(60);
constexpr size_t kMaxNonces = 64;      // outstanding hellos kept
constexpr size_t kMaxTextBytes = 4096; // host names and tokens in StartJob

void log(const std::string &line) {
  std::fprintf(stderr, "sbpflow-worker: %s\n", line.c_str());
  std::fflush(stderr);
}

struct NodeState {
  const NodeOptions *options = nullptr;
  std::deque<std::pair<std::string, Clock::time_point>> nonces;
  ChildProcesses ranks;
  caf::actor_addr driver; // the running job's driver; null when idle
  std::string job;        // "job N from HOST:PORT" while one runs
  int64_t jobsStarted = 0, jobsEnded = 0;

  bool takeNonce(const std::string &nonce) {
    auto now = Clock::now();
    while (!nonces.empty() && now - nonces.front().second > kNonceLifetime)
      nonces.pop_front();
    for (auto it = nonces.begin(); it != nonces.end(); ++it)
      if (sameMac(it->first, nonce)) {
        nonces.erase(it);
        return true;
      }
    return false;
  }

  // Why `j` must be refused, or "".
  std::string refusal(const StartJob &j) {
    if (j.protocolVersion != kProtocolVersion)
      return "protocol version " + std::to_string(j.protocolVersion) + " from the driver, but " +
             "this node speaks version " + std::to_string(kProtocolVersion);
    if (j.nonce.size() > kMaxTextBytes || j.driverHost.size() > kMaxTextBytes ||
        j.jobToken.size() > kMaxTextBytes || j.mac.size() > kMaxTextBytes)
      return "a field of the request is too long";
    if (!takeNonce(j.nonce))
      return "unknown or already used nonce (say hello first; nonces live " +
             std::to_string(kNonceLifetime.count()) + " s and are single-use)";
    if (!sameMac(j.mac, hmacHex(options->secret, j.signedText())))
      return "the driver did not prove the cluster's shared secret (wrong --secret-file?)";
    if (!job.empty())
      return "busy with " + job;
    if (j.ranks < 1 || j.ranks > options->maxRanks)
      return std::to_string(j.ranks) + " ranks asked, this node hosts 1 to " +
             std::to_string(options->maxRanks) + " (sbpflow-worker --ranks)";
    if (j.driverHost.empty() || j.driverPort <= 0 || j.driverPort > 65535)
      return "the driver's address '" + j.driverHost + ":" + std::to_string(j.driverPort) +
             "' is not valid";
    if (j.node < 0 || j.jobToken.empty())
      return "the request names no node index or job token";
    return "";
  }

  // Reaps the job's rank processes (killing those left after `grace`).
  void endJob(const std::string &why, std::chrono::milliseconds grace) {
    if (job.empty())
      return;
    std::string unclean = ranks.killAndReap(grace);
    log(job + " ended: " + why + (unclean.empty() ? "" : " (" + unclean + ")"));
    job.clear();
    driver = caf::actor_addr{};
    ++jobsEnded;
  }
};

caf::behavior nodeBehavior(caf::stateful_actor<NodeState> *self, const NodeOptions *options) {
  self->state.options = options;
  self->set_default_handler(
      [](caf::scheduled_actor *, caf::message_view &) -> caf::result<caf::message> {
        // Anything else a peer sends is dropped: it cannot change the node.
        return caf::sec::unexpected_message;
      });
  self->set_down_handler([self](caf::down_msg &dm) {
    if (dm.source == self->state.driver)
      self->state.endJob("the driver was lost (" + to_string(dm.reason) + ")",
                         std::chrono::milliseconds(0));
  });
  self->send(self, node_tick_atom::value);
  auto finished = [self] {
    return self->state.options->maxJobs > 0 &&
           self->state.jobsEnded >= self->state.options->maxJobs;
  };
  return {
      [self](NodeHello &h) -> NodeChallenge {
        auto &st = self->state;
        NodeChallenge c;
        c.protocolVersion = kProtocolVersion;
        c.maxRanks = st.options->maxRanks;
        if (h.protocolVersion == kProtocolVersion) {
          c.nonce = randomNonce();
          st.nonces.emplace_back(c.nonce, Clock::now());
          if (st.nonces.size() > kMaxNonces)
            st.nonces.pop_front();
        }
        return c;
      },
      [self](StartJob &j) -> NodeReply {
        auto &st = self->state;
        if (std::string why = st.refusal(j); !why.empty()) {
          log("refused a job from " + j.driverHost + ":" + std::to_string(j.driverPort) + ": " +
              why);
          return NodeReply{false, why, {}};
        }
        std::string driverAt = j.driverHost + ":" + std::to_string(j.driverPort);
        NodeReply reply{true, "", {}};
        for (int l = 0; l < j.ranks; ++l) {
          std::vector<std::string> args = {
              "--connect",    driverAt,          "--node",      std::to_string(j.node),
              "--local-rank", std::to_string(l), "--job-token", j.jobToken,
              "--bind",       st.options->host};
          args.insert(args.end(), st.options->rankArgs.begin(), st.options->rankArgs.end());
          auto pid = st.ranks.spawn(st.options->rankBinary, args);
          if (!pid) {
            st.ranks.killAndReap(std::chrono::milliseconds(0));
            log("cannot start the ranks of a job from " + driverAt + ": " + pid.status().message());
            return NodeReply{false, pid.status().message(), {}};
          }
          reply.pids.push_back(*pid);
        }
        st.driver = caf::actor_cast<caf::actor_addr>(self->current_sender());
        self->monitor(self->current_sender());
        st.job = "job " + std::to_string(++st.jobsStarted) + " from " + driverAt;
        log(st.job + ": started " + std::to_string(j.ranks) + " rank process(es)");
        return reply;
      },
      [self, finished](EndJob &e) {
        if (caf::actor_cast<caf::actor_addr>(self->current_sender()) != self->state.driver)
          return;
        self->state.endJob(e.reason, std::chrono::milliseconds(3000));
        if (finished())
          self->quit();
      },
      [self, finished](node_tick_atom) {
        // Only its own ticks: each tick arms the next, so ticks sent by a
        // peer would multiply the polling.
        if (self->current_sender() != self->ctrl())
          return;
        auto &st = self->state;
        while (auto ended = st.ranks.pollExited())
          log(st.job + ": rank process pid " + std::to_string(ended->first) + " " + ended->second);
        if (!st.job.empty() && st.ranks.empty())
          st.endJob("every rank process exited", std::chrono::milliseconds(0));
        if (finished())
          self->quit();
        else
          self->delayed_send(self, kTick, node_tick_atom::value);
      },
  };
}

// The published actor. CAF delivers an exit message from any peer holding
// the node's handle, and one with exit_reason::kill ends an actor whatever
// its exit handler says; so every exit message is dropped before the
// mailbox, and only runNode, through `stopAllowed`, can stop the node.
class NodeActor : public caf::stateful_actor<NodeState> {
public:
  NodeActor(caf::actor_config &cfg, const NodeOptions *options,
            std::shared_ptr<const std::atomic<bool>> stopAllowed)
      : caf::stateful_actor<NodeState>(cfg), options_(options),
        stopAllowed_(std::move(stopAllowed)) {}

  void enqueue(caf::mailbox_element_ptr element, caf::execution_unit *host) override {
    if (element->content().match_elements<caf::exit_msg>() && !stopAllowed_->load())
      return;
    caf::stateful_actor<NodeState>::enqueue(std::move(element), host);
  }

  caf::behavior make_behavior() override { return nodeBehavior(this, options_); }

private:
  const NodeOptions *options_;
  std::shared_ptr<const std::atomic<bool>> stopAllowed_;
};

} // namespace

int runNode(const NodeOptions &options) {
  caf::actor_system_config cfg;
  configureClusterSystem(cfg);
  caf::actor_system system{cfg};
  auto stopAllowed = std::make_shared<std::atomic<bool>>(false);
  auto node = system.spawn<NodeActor>(&options, stopAllowed);
  auto port = system.middleman().publish(node, options.port, options.host.c_str(), true);
  if (!port) {
    std::fprintf(stderr, "error: cannot listen on %s:%u: %s\n", options.host.c_str(),
                 static_cast<unsigned>(options.port), system.render(port.error()).c_str());
    stopAllowed->store(true);
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    return 1;
  }
  log("listening on " + options.host + ":" + std::to_string(*port) + " (protocol version " +
      std::to_string(kProtocolVersion) + ", up to " + std::to_string(options.maxRanks) +
      " rank(s) per job)");
  caf::scoped_actor self{system};
  self->wait_for(node);
  system.middleman().unpublish(node, *port);
  return 0;
}

} // namespace sbpflow::cluster
