// Each configured bound crossed against the real daemon: connections in total and per uid,
// unanswered reply bytes per connection (back-pressure), tracked processes, and the message
// size. Crossing a bound refuses the new connection, call or object; it never grows memory,
// and the daemon keeps serving everyone else.
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/integration/daemon_fixture.h"

namespace budgetd::integration {
namespace {

// A connection the daemon admitted: it answers a call.
bool answers(VarlinkClient& c) {
  auto r = c.call("org.varlink.service.GetInfo", Json::object(), kWaitTimeout);
  return r && r->ok();
}

int stat_of(VarlinkClient& c, const char* field) {
  Json s = call_ok(c, "io.budgetd.Admin.Stats");
  return s.is_null() ? -1 : s["daemon"].value(field, -1);
}

TEST(Bounds, MaxConnections) {
  Daemon d;
  ASSERT_TRUE(d.start("[bounds]\nmax_connections = 8\n"));
  std::vector<VarlinkClient> open;
  for (int i = 0; i < 8; ++i) {
    open.push_back(d.client());
    ASSERT_TRUE(answers(open.back())) << "connection " << i + 1;
  }
  // The 9th is accepted by the kernel, then closed by the daemon without an answer.
  auto ninth = d.client();
  EXPECT_TRUE(ninth.wait_closed(kWaitTimeout));
  EXPECT_TRUE(d.wait_for_log("bounds.max_connections"));
  // The eight are still served.
  for (auto& c : open) EXPECT_TRUE(answers(c));
  EXPECT_EQ(stat_of(open[0], "connections"), 8);

  // Once one closes (and the daemon has seen it), a new one is admitted.
  open.back().close();
  open.pop_back();
  ASSERT_TRUE(wait_until([&] { return stat_of(open[0], "connections") == 7; }));
  auto again = d.client();
  EXPECT_TRUE(answers(again));
  // And the bound holds again.
  auto tenth = d.client();
  EXPECT_TRUE(tenth.wait_closed(kWaitTimeout));
}

TEST(Bounds, MaxConnectionsPerUid) {
  Daemon d;
  ASSERT_TRUE(d.start(
      "[socket]\nmode = \"0666\"\n[bounds]\nmax_connections = 100\nmax_connections_per_uid = 3\n"));
  std::vector<VarlinkClient> mine;
  for (int i = 0; i < 3; ++i) {
    mine.push_back(d.client());
    ASSERT_TRUE(answers(mine.back())) << "root connection " << i + 1;
  }
  auto fourth = d.client();
  EXPECT_TRUE(fourth.wait_closed(kWaitTimeout)) << "root's 4th connection was not refused";
  EXPECT_TRUE(d.wait_for_log("bounds.max_connections_per_uid"));

  // Another uid has its own three, while root's are open; its 4th is refused too.
  const std::string sock = d.socket_path();
  int rc = run_as(65534, 65534, [&] {
    std::vector<VarlinkClient> theirs;
    for (int i = 0; i < 3; ++i) {
      auto c = VarlinkClient::connect(sock);
      if (!c) return 10 + i;
      theirs.push_back(std::move(*c));
      if (!answers(theirs.back())) return 20 + i;
    }
    auto c = VarlinkClient::connect(sock);
    if (!c) return 30;
    if (!c->wait_closed(kWaitTimeout)) return 31;  // not refused
    return 0;
  });
  EXPECT_EQ(rc, 0)
      << "10+i: connect failed; 20+i: connection i not served; 31: the 4th was not refused";

  // Root's three still work; its limit still holds.
  for (auto& c : mine) EXPECT_TRUE(answers(c));
  auto fifth = d.client();
  EXPECT_TRUE(fifth.wait_closed(kWaitTimeout));
}

TEST(Bounds, MaxProcesses) {
  Daemon d;
  ASSERT_TRUE(d.start("[bounds]\nmax_processes = 5\n"));
  auto c = d.client();
  for (int i = 0; i < 5; ++i)
    call_ok(c, "io.budgetd.Agent.Allocate", {{"process", "env-" + std::to_string(i)}});
  Json e = call_err(c, "io.budgetd.Agent.Allocate", {{"process", "env-5"}},
                    "io.budgetd.CapacityExceeded");
  EXPECT_FALSE(e.value("message", "").empty()) << e;
  // A process first seen in a usage report is refused the same way; known ones still record.
  call_err(c, "io.budgetd.Agent.RecordUsage", {{"process", "env-6"}, {"llm_calls", 1}},
           "io.budgetd.CapacityExceeded");
  call_ok(c, "io.budgetd.Agent.RecordUsage", {{"process", "env-0"}, {"llm_calls", 1}});
  EXPECT_EQ(call_ok(c, "io.budgetd.Agent.IsTracked", {{"process", "env-5"}})["tracked"], false);
  EXPECT_EQ(call_ok(c, "io.budgetd.Admin.GetSystemUsage")["total_processes"], 5);
  // A release makes room.
  call_ok(c, "io.budgetd.Agent.Release", {{"process", "env-4"}});
  EXPECT_EQ(call_ok(c, "io.budgetd.Agent.Allocate", {{"process", "env-5"}})["allocated"], true);
  call_err(c, "io.budgetd.Agent.Allocate", {{"process", "env-7"}}, "io.budgetd.CapacityExceeded");
}

// A RecordUsage call whose JSON text is exactly `size` bytes (whitespace after the
// opening brace pads it: JSON allows it, and the framer counts every byte).
std::string call_of_size(std::size_t size) {
  Json params = {{"process", "env-m"}, {"tool_calls", 1}};
  std::string f = client::encode_call("io.budgetd.Agent.RecordUsage", params);
  f.pop_back();  // the NUL
  EXPECT_LE(f.size(), size);
  f.insert(1, std::string(size - f.size(), ' '));
  EXPECT_EQ(f.size(), size);
  return f + '\0';
}

TEST(Bounds, MaxMessageBytes) {
  Daemon d;
  ASSERT_TRUE(d.start("[bounds]\nmax_message_bytes = 4096\n"));
  auto keeper = d.client();
  call_ok(keeper, "io.budgetd.Agent.Allocate", {{"process", "env-m"}});

  // Exactly the limit is served.
  auto at_limit = d.client();
  ASSERT_TRUE(at_limit.send_raw(call_of_size(4096)));
  auto r = at_limit.read_reply();
  ASSERT_TRUE(r) << r.error();
  EXPECT_TRUE(r->ok()) << r->error.value_or("");
  EXPECT_TRUE(answers(at_limit));

  // One byte more closes the connection, and is not processed.
  auto over = d.client();
  (void)over.send_raw(call_of_size(4097), Ms{5000});
  EXPECT_TRUE(over.wait_closed(kWaitTimeout));
  EXPECT_TRUE(d.wait_for_log("message_too_large"));

  Json u = call_ok(keeper, "io.budgetd.Agent.GetUsage", {{"process", "env-m"}});
  EXPECT_EQ(u["usage"]["tool_calls"], 1) << u;
  EXPECT_TRUE(answers(keeper));
}

// Sends one small frame without blocking: true if it went out whole, false on EAGAIN (a
// frame this small is never split by a Unix stream socket).
bool try_send(int fd, const std::string& frame) {
  ssize_t n = ::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == static_cast<ssize_t>(frame.size())) return true;
  EXPECT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      << "send returned " << n << " errno " << errno;
  return false;
}

TEST(Bounds, MaxPendingReplyBytesPausesAReaderThatDoesNotRead) {
  // Each call below lists kPage processes from offset i % kPage: its reply is a few hundred
  // KiB, and its first process says which call it answers.
  constexpr int kProcesses = 400, kPage = 200;
  Daemon d;
  ASSERT_TRUE(d.start("[bounds]\nmax_pending_reply_bytes = 65536\n"));
  auto op = d.client();
  auto id_of = [](int i) {
    char id[16];
    std::snprintf(id, sizeof id, "env-%03d", i);
    return std::string(id);
  };
  std::string allocations;
  for (int i = 0; i < kProcesses; ++i)
    allocations += client::encode_call("io.budgetd.Agent.Allocate", {{"process", id_of(i)}});
  ASSERT_TRUE(op.send_raw(allocations));
  for (int i = 0; i < kProcesses; ++i) ASSERT_TRUE(op.read_reply()->ok());
  auto frame_of = [&](int i) {
    return client::encode_call("io.budgetd.Admin.ListProcesses",
                               {{"offset", i % kPage}, {"limit", kPage}});
  };
  const std::size_t one_reply =
      client::encode_call("x", call_ok(op, "io.budgetd.Admin.ListProcesses", {{"limit", kPage}}))
          .size();
  const long rss_before = rss_kib(d.pid());
  ASSERT_GT(rss_before, 0);

  // Pipeline without reading until the daemon pauses this connection and the socket is full.
  auto greedy = d.client();
  int sent = 0;
  bool paused = false;
  const bool filled = wait_until(
      [&] {
        while (try_send(greedy.fd(), frame_of(sent))) ++sent;
        if (!paused) paused = stat_of(op, "paused_connections") == 1;
        return paused;
      },
      Ms{30'000}, Ms{1});
  ASSERT_TRUE(filled) << "the daemon never paused the connection; " << sent << " calls sent";
  // Fill whatever room is left, so the daemon holds all it ever will.
  pollfd p{greedy.fd(), POLLOUT, 0};
  while (::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && try_send(greedy.fd(), frame_of(sent)))
    ++sent;

  // Unbounded, the daemon would now hold every reply. Bounded, it holds about the bound.
  const double would_hold_mib =
      static_cast<double>(sent) * static_cast<double>(one_reply) / (1 << 20);
  const long rss_paused = rss_kib(d.pid());
  EXPECT_GT(would_hold_mib, 32.0) << "not enough calls pipelined to prove anything: " << sent;
  EXPECT_LT(rss_paused - rss_before, 16 * 1024)
      << "RSS grew from " << rss_before << " KiB to " << rss_paused << " KiB with " << sent
      << " calls (" << would_hold_mib << " MiB of replies) pipelined";
  std::printf("pipelined %d calls (%.0f MiB of replies); daemon RSS %ld -> %ld KiB\n", sent,
              would_hold_mib, rss_before, rss_paused);
  // Other clients are served meanwhile.
  EXPECT_TRUE(answers(op));
  EXPECT_EQ(stat_of(op, "paused_connections"), 1);

  // Once the client reads, every reply arrives, in order.
  for (int i = 0; i < sent; ++i) {
    auto m = greedy.read_message(kWaitTimeout);
    ASSERT_TRUE(m) << "reply " << i << " of " << sent << ": " << m.error();
    ASSERT_TRUE(
        m->starts_with("{\"parameters\":{\"processes\":[{\"process\":\"" + id_of(i % kPage) + "\""))
        << "reply " << i << " of " << sent << " out of order: " << m->substr(0, 100);
  }
  EXPECT_TRUE(answers(greedy));
  EXPECT_TRUE(wait_until([&] { return stat_of(op, "paused_connections") == 0; }));
}

}  // namespace
}  // namespace budgetd::integration
