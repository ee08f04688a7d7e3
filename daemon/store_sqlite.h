// Thin RAII over the SQLite C API for the store's files (store*.cc). Not a general
// wrapper: just owning handles, binding, and turning a result code into a StoreError.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/store.h"

namespace budgetd::daemon::sql {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;

// Maps a result code to the store's error kinds, with `what` (and the connection's message,
// which names the failing statement's cause) in the message.
StoreError error(sqlite3* db, int rc, std::string_view what);
inline Error to_error(const StoreError& e) { return Error{Errc::invalid_state, e.message}; }

// Runs statements that return no rows (schema, pragmas, BEGIN/COMMIT).
std::expected<void, StoreError> exec(sqlite3* db, std::string_view sql);

class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stmt& operator=(Stmt&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~Stmt() { sqlite3_finalize(s_); }

  static std::expected<Stmt, StoreError> prepare(sqlite3* db, std::string_view sql) {
    Stmt st;
    int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &st.s_, nullptr);
    if (rc != SQLITE_OK) return std::unexpected(error(db, rc, "prepare " + std::string(sql.substr(0, 60))));
    return st;
  }

  sqlite3_stmt* get() const { return s_; }
  // Binds are by position, from 1. Text and blobs are not copied: they must outlive step().
  void bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  // An empty view may have no data pointer, which SQLite would store as NULL.
  void bind(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data() ? v.data() : "", static_cast<int>(v.size()), SQLITE_STATIC);
  }
  void bind_blob(int i, std::string_view v) { sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC); }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(s_); }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t int64(int col) const { return sqlite3_column_int64(s_, col); }
  std::string_view text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string_view();
  }
  std::string_view blob(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string_view();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// Resets a statement when a scope ends, whatever way it ends.
class ResetOnExit {
 public:
  explicit ResetOnExit(Stmt& s) : s_(s) {}
  ~ResetOnExit() { s_.reset(); }
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;

 private:
  Stmt& s_;
};

}  // namespace budgetd::daemon::sql
