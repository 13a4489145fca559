// A driver and a node daemon of different protocol versions refuse each other
// with a message naming both versions, and the daemon survives the refusal.
// (A rank's plan version is checked by the plan loader: tests/plan.)
#include "runtime/cluster/Auth.h"
#include "runtime/cluster/Driver.h"
#include "runtime/cluster/Messages.h"
#include "runtime/cluster/Processes.h"
#include "tests/TempDir.h"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <thread>

using namespace sbpflow;
using namespace sbpflow::cluster;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace {

const std::string kSecret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const std::string kOther = std::to_string(kProtocolVersion + 1);
const std::string kOurs = std::to_string(kProtocolVersion);

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A node daemon (`sbpflow-worker --listen 127.0.0.1:0`) in a child process,
// with its secret and log in a directory of its own; killed when the object
// goes away so a failed assertion leaves nothing behind.
class NodeDaemon {
public:
  NodeDaemon() : secretFile_(dir_.path() + "/secret"), log_(dir_.path() + "/node.log") {
    std::ofstream(secretFile_) << kSecret << "\n";
    started_ =
        process_
            .spawn(SBPFLOW_WORKER, {"--listen", "127.0.0.1:0", "--secret-file", secretFile_}, log_)
            .isOk();
    // The port is ephemeral: the daemon prints it once it listens.
    const std::regex listening("sbpflow-worker: listening on 127\\.0\\.0\\.1:([0-9]+) \\(");
    for (int i = 0; i < 200 && port_ == 0 && alive(); ++i) {
      std::smatch m;
      std::string text = log();
      if (std::regex_search(text, m, listening))
        port_ = static_cast<uint16_t>(std::stoi(m[1]));
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  NodeDaemon(const NodeDaemon &) = delete;
  NodeDaemon &operator=(const NodeDaemon &) = delete;

  uint16_t port() const { return port_; } // 0: it did not start
  std::string log() const { return readFile(log_); }
  bool alive() {
    if (started_ && process_.pollExited())
      started_ = false;
    return started_;
  }

private:
  test::TempDir dir_{"sbpflow_node_protocol"}; // outlives the process in it
  std::string secretFile_, log_;
  // Killed and reaped when the test ends, whatever it asserted.
  ChildProcesses process_;
  bool started_ = false;
  uint16_t port_ = 0;
};

// A driver's side: a CAF system connected to the daemon's published actor.
struct Peer {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> system;
  caf::actor node;
  std::string error; // why `node` is null
  explicit Peer(uint16_t port) {
    configureClusterSystem(cfg);
    system = std::make_unique<caf::actor_system>(cfg);
    auto found = remoteActor(*system, "127.0.0.1", port);
    if (found)
      node = *found;
    else
      error = system->render(found.error());
  }
};

NodeChallenge hello(caf::scoped_actor &self, const caf::actor &node, int32_t version) {
  NodeChallenge challenge;
  self->request(node, std::chrono::seconds(10), NodeHello{version})
      .receive([&](NodeChallenge &c) { challenge = std::move(c); },
               [&](caf::error &e) { ADD_FAILURE() << "no answer to hello: " << to_string(e); });
  return challenge;
}

} // namespace

TEST(NodeProtocol, DaemonRefusesAnotherProtocolVersion) {
  NodeDaemon daemon;
  ASSERT_NE(daemon.port(), 0) << "the daemon did not start:\n" << daemon.log();

  Peer peer(daemon.port());
  ASSERT_TRUE(peer.node) << peer.error;
  caf::actor node = peer.node;
  caf::scoped_actor self{*peer.system};

  // A driver of another version gets no nonce, so it cannot even try a job.
  NodeChallenge other = hello(self, node, kProtocolVersion + 1);
  EXPECT_EQ(other.protocolVersion, kProtocolVersion);
  EXPECT_EQ(other.nonce, "");

  // A request valid in every other way (fresh nonce, right secret) is still
  // refused for its version alone.
  StartJob job;
  job.protocolVersion = kProtocolVersion + 1;
  job.nonce = hello(self, node, kProtocolVersion).nonce;
  job.driverHost = "127.0.0.1";
  job.driverPort = 4242;
  job.ranks = 1;
  job.jobToken = "token";
  job.mac = hmacHex(kSecret, job.signedText());
  NodeReply reply{true, "", {}};
  self->request(node, std::chrono::seconds(10), job)
      .receive([&](NodeReply &r) { reply = std::move(r); },
               [&](caf::error &e) { FAIL() << "no answer to StartJob: " << to_string(e); });
  EXPECT_FALSE(reply.ok);
  EXPECT_TRUE(reply.pids.empty());
  EXPECT_EQ(reply.message, "protocol version " + kOther +
                               " from the driver, but this node speaks version " + kOurs);
  EXPECT_THAT(daemon.log(),
              HasSubstr("sbpflow-worker: refused a job from 127.0.0.1:4242: " + reply.message));

  // A refusal ends nothing: the daemon still serves drivers of its version.
  EXPECT_TRUE(daemon.alive());
  NodeChallenge ours = hello(self, node, kProtocolVersion);
  EXPECT_EQ(ours.protocolVersion, kProtocolVersion);
  EXPECT_EQ(ours.nonce.size(), 64u);
}

// CAF lets any peer that holds a handle send an exit message, or anything at
// all; none of it may end the daemon.
TEST(NodeProtocol, DaemonSurvivesExitAndStrayMessages) {
  NodeDaemon daemon;
  ASSERT_NE(daemon.port(), 0) << "the daemon did not start:\n" << daemon.log();
  {
    Peer peer(daemon.port());
    ASSERT_TRUE(peer.node) << peer.error;
    caf::anon_send(peer.node, EndJob{"not from the driver"});
    caf::anon_send(peer.node, std::string("a stray string"), 42);
    caf::anon_send_exit(peer.node, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(peer.node, caf::exit_reason::kill);
    caf::scoped_actor self{*peer.system};
    NodeChallenge ours = hello(self, peer.node, kProtocolVersion);
    EXPECT_EQ(ours.nonce.size(), 64u);
  } // the peer disconnects, too
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(daemon.alive()) << daemon.log();
  Peer next(daemon.port());
  ASSERT_TRUE(next.node) << "the daemon stopped listening: " << next.error << "\n" << daemon.log();
  caf::scoped_actor self{*next.system};
  EXPECT_EQ(hello(self, next.node, kProtocolVersion).nonce.size(), 64u);
}

TEST(NodeProtocol, DriverRefusesANodeOfAnotherVersion) {
  test::TempDir dir("sbpflow_node_protocol");
  std::string secretFile = dir.path() + "/secret", planFile = dir.path() + "/one.plan";
  std::ofstream(secretFile) << kSecret << "\n";
  // A real plan, so the job could only fail at the node's version.
  ChildProcesses maker;
  ASSERT_TRUE(
      maker
          .spawn(CLUSTER_MAKE_TEST_PLAN, {"--ranks", "1", "-o", planFile}, dir.path() + "/plan.log")
          .isOk());
  ASSERT_EQ(maker.killAndReap(std::chrono::seconds(60)), "") << readFile(dir.path() + "/plan.log");
  std::string plan = readFile(planFile);

  // A stand-in node of the next version; runJob has its own actor system and
  // reaches this one over loopback like any remote node.
  caf::actor_system_config cfg;
  configureClusterSystem(cfg);
  caf::actor_system system{cfg};
  auto standIn = system.spawn([]() -> caf::behavior {
    return {[](NodeHello &) { return NodeChallenge{kProtocolVersion + 1, "some-nonce", 4}; }};
  });
  auto port = system.middleman().publish(standIn, 0, "127.0.0.1", true);
  ASSERT_TRUE(port) << system.render(port.error());
  std::string at = "127.0.0.1:" + std::to_string(*port);

  RunOptions options;
  options.nodes = {at};
  options.secretFile = secretFile;
  options.data = "synthetic";
  options.rendezvousTimeoutMs = 10000;
  std::ostringstream log;
  options.log = &log;
  JobReport report;
  Status s = runJob(std::vector<uint8_t>(plan.begin(), plan.end()), options, &report);
  ASSERT_FALSE(s.isOk());
  EXPECT_EQ(s.message(), "node " + at + " speaks protocol version " + kOther + ", this driver " +
                             kOurs + ": run the same sbpflow release on every node");
  caf::anon_send_exit(standIn, caf::exit_reason::user_shutdown);
}
