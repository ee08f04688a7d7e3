#include "lib/event.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>
#include <tuple>

namespace budgetd {
namespace {

struct KindRow {
  EventKind kind;
  std::string_view name;
  Severity severity;
};

constexpr KindRow kKinds[] = {
    {EventKind::allocated, "allocated", Severity::info},
    {EventKind::threshold_crossed, "threshold_crossed", Severity::warning},
    {EventKind::violation, "violation", Severity::error},
    {EventKind::soft_timeout, "soft_timeout", Severity::warning},
    {EventKind::timeout, "timeout", Severity::error},
    {EventKind::reset, "reset", Severity::info},
    {EventKind::limit_changed, "limit_changed", Severity::info},
    {EventKind::reservation_expired, "reservation_expired", Severity::warning},
    {EventKind::pending_created, "pending_created", Severity::warning},
    {EventKind::pending_decided, "pending_decided", Severity::info},
    {EventKind::released, "released", Severity::info},
};

TEST(EventKindName, EveryKindHasItsExactName) {
  for (const auto& row : kKinds) EXPECT_EQ(event_kind_name(row.kind), row.name);
}

TEST(EventKindName, EveryEnumeratorIsCoveredAndDistinct) {
  EXPECT_EQ(static_cast<int>(EventKind::released) + 1, static_cast<int>(std::size(kKinds)));
  std::set<std::string_view> seen;
  for (int i = 0; i <= static_cast<int>(EventKind::released); ++i) {
    auto name = event_kind_name(static_cast<EventKind>(i));
    EXPECT_NE(name, "unknown") << i;
    EXPECT_TRUE(seen.insert(name).second) << i;
  }
  EXPECT_EQ(seen.size(), 11u);
  EXPECT_EQ(event_kind_name(static_cast<EventKind>(99)), "unknown");
}

TEST(EventSeverity, WarningsErrorsAndInfo) {
  for (const auto& row : kKinds) EXPECT_EQ(event_severity(row.kind), row.severity) << row.name;
}

TEST(EventSeverity, HardLimitsAreErrorsAndSoftOnesWarnings) {
  // The journal priority the daemon derives: a violation or timeout is an error, the
  // warnings that precede them are warnings.
  EXPECT_EQ(event_severity(EventKind::violation), Severity::error);
  EXPECT_EQ(event_severity(EventKind::timeout), Severity::error);
  EXPECT_EQ(event_severity(EventKind::threshold_crossed), Severity::warning);
  EXPECT_EQ(event_severity(EventKind::soft_timeout), Severity::warning);
}

TEST(MakeEvent, SetsKindAndPathAndZeroesTheRest) {
  Event e = make_event(EventKind::violation, "acme/research");
  EXPECT_EQ(e.kind, EventKind::violation);
  EXPECT_EQ(e.path, "acme/research");
  EXPECT_EQ(e.at, TimePoint{});
  EXPECT_EQ(e.process, "");
  EXPECT_EQ(e.thread, "");
  EXPECT_EQ(e.resource, "");
  EXPECT_EQ(e.used, Decimal());
  EXPECT_EQ(e.limit, Decimal());
  EXPECT_EQ(e.percent, 0u);
  EXPECT_EQ(e.reason, Reason::none);
  EXPECT_EQ(e.action, Action::none);
  EXPECT_EQ(e.grace_seconds, 0u);
  EXPECT_EQ(e.ref, 0u);
  EXPECT_EQ(e.outcome, "");
  EXPECT_EQ(e.message, "");
  EXPECT_FALSE(e.usage.has_value());
}

}  // namespace
}  // namespace budgetd
