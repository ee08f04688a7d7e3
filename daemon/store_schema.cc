// The database file: connections, the schema, and the checks that refuse a file that is
// not ours, is damaged, or cannot be written, before anything is read from it.
#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "daemon/store_internal.h"

namespace budgetd::daemon {

namespace sql {

StoreError error(sqlite3* db, int rc, std::string_view what) {
  StoreError e;
  int ext = db ? sqlite3_extended_errcode(db) : rc;
  if ((ext & 0xff) != (rc & 0xff)) ext = rc;  // the connection's code is from another call
  e.sqlite_code = ext;
  switch (rc & 0xff) {
    case SQLITE_FULL: e.code = StoreErrc::disk_full; break;
    case SQLITE_IOERR: e.code = StoreErrc::io_error; break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: e.code = StoreErrc::corrupt; break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: e.code = StoreErrc::busy; break;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM: e.code = StoreErrc::unwritable; break;
    default: e.code = StoreErrc::other; break;
  }
  std::string cause = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int sys = db ? sqlite3_system_errno(db) : 0;
  if (sys != 0 && (e.code == StoreErrc::io_error || e.code == StoreErrc::unwritable || e.code == StoreErrc::disk_full))
    cause += fmt::format(" ({})", std::strerror(sys));
  e.message = fmt::format("{}: {} [{}]", what, cause, store_errc_name(e.code));
  return e;
}

std::expected<void, StoreError> exec(sqlite3* db, std::string_view text) {
  std::string owned(text);  // sqlite3_exec wants a NUL-terminated string
  int rc = sqlite3_exec(db, owned.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return std::unexpected(error(db, rc, std::string(text.substr(0, 60))));
  return {};
}

}  // namespace sql

namespace {

// Engine records: one codec blob per row (lib/state_codec.h). The ledger keeps what Records
// and Summary filter on as columns, its amounts (total cost and lines, raw 128-bit
// decimals) and the rest of the record in two codec blobs. Its key is (recorded_at, seq):
// time ranges and Records' newest-first order read the table itself, with no time index
// to maintain, whatever the clock did. seq is the writer's counter (ledger_meta), unique
// across runs. `resources` is ",tokens_in,tokens_out," so a resource filter is one
// instr(). Version 1 (rowid ledger, decimal text) files are refused, not converted.
constexpr std::string_view kSchema = R"sql(
CREATE TABLE processes (id TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE scopes (path TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE templates (name TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE threads (id TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE holds (id INTEGER PRIMARY KEY, rec BLOB NOT NULL);
CREATE TABLE rate_limits (endpoint INTEGER NOT NULL, name TEXT NOT NULL, rec BLOB NOT NULL,
                          PRIMARY KEY (endpoint, name)) WITHOUT ROWID;
CREATE TABLE rate_windows (user TEXT NOT NULL, endpoint TEXT NOT NULL, rec BLOB NOT NULL,
                           PRIMARY KEY (user, endpoint)) WITHOUT ROWID;
CREATE TABLE counters (id INTEGER PRIMARY KEY CHECK (id = 0), rec BLOB NOT NULL);
CREATE TABLE start_times (process TEXT PRIMARY KEY, start_time INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE idempotency (method TEXT NOT NULL, uid INTEGER NOT NULL, idem_key TEXT NOT NULL,
                          reply TEXT NOT NULL, recorded_at INTEGER NOT NULL,
                          PRIMARY KEY (method, uid, idem_key)) WITHOUT ROWID;
CREATE INDEX idempotency_age ON idempotency (recorded_at);
CREATE TABLE ledger (
  recorded_at INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  process TEXT NOT NULL,
  thread TEXT NOT NULL,
  scope TEXT NOT NULL,
  agent TEXT NOT NULL,
  model TEXT NOT NULL,
  action TEXT NOT NULL,
  resources TEXT NOT NULL,
  amounts BLOB NOT NULL,
  details BLOB NOT NULL,
  PRIMARY KEY (recorded_at, seq)) WITHOUT ROWID;
CREATE INDEX ledger_process ON ledger (process, recorded_at);
CREATE INDEX ledger_scope ON ledger (scope, recorded_at);
CREATE TABLE ledger_meta (id INTEGER PRIMARY KEY CHECK (id = 0), next_seq INTEGER NOT NULL);
CREATE TABLE ledger_daily (
  day INTEGER NOT NULL,
  scope TEXT NOT NULL,
  agent TEXT NOT NULL,
  model TEXT NOT NULL,
  thread TEXT NOT NULL,
  process TEXT NOT NULL,
  resource TEXT NOT NULL,
  quantity TEXT NOT NULL,
  cost TEXT NOT NULL,
  records INTEGER NOT NULL,
  PRIMARY KEY (day, scope, agent, model, thread, process, resource)) WITHOUT ROWID;
)sql";

std::expected<int64_t, StoreError> pragma_int(sqlite3* db, std::string_view name, const std::string& path) {
  auto st = sql::Stmt::prepare(db, fmt::format("PRAGMA {}", name));
  if (!st) {
    auto e = st.error();
    e.message = fmt::format("{}: cannot read the database: {}", path, e.message);
    return std::unexpected(std::move(e));
  }
  int rc = st->step();
  if (rc != SQLITE_ROW) return std::unexpected(sql::error(db, rc, fmt::format("{}: cannot read the database", path)));
  return st->int64(0);
}

}  // namespace

std::expected<sql::Db, StoreError> open_connection(const std::string& path, bool memory, bool read_only) {
  sqlite3* raw = nullptr;
  int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  if (memory) flags |= SQLITE_OPEN_URI | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  else flags |= read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  std::string name = memory ? fmt::format("file:{}?vfs=memdb", path) : path;
  int rc = sqlite3_open_v2(name.c_str(), &raw, flags, nullptr);
  sql::Db db(raw);
  if (rc != SQLITE_OK) return std::unexpected(sql::error(db.get(), rc, fmt::format("{}: cannot open", path)));
  sqlite3_extended_result_codes(db.get(), 1);
  // Readers wait out a writer's commit on the memdb (no WAL there); WAL readers never wait.
  sqlite3_busy_timeout(db.get(), 5000);
  if (!read_only && !memory && sqlite3_db_readonly(db.get(), "main") == 1)
    return std::unexpected(StoreError{StoreErrc::unwritable, SQLITE_READONLY,
                                      fmt::format("{}: opened read-only: no write permission on the file [unwritable]", path)});
  if (read_only) {
    if (auto r = sql::exec(db.get(), "PRAGMA query_only = 1"); !r) return std::unexpected(r.error());
  }
  return db;
}

std::expected<void, StoreError> prepare_schema(sqlite3* db, const std::string& path, bool memory, bool verify) {
  // The first read of the file: garbage gives SQLITE_NOTADB here, an unwritable directory
  // (no -wal/-shm) SQLITE_CANTOPEN.
  auto app = pragma_int(db, "application_id", path);
  if (!app) return std::unexpected(app.error());
  auto version = pragma_int(db, "user_version", path);
  if (!version) return std::unexpected(version.error());
  auto tables = [&]() -> std::expected<int64_t, StoreError> {
    auto st = sql::Stmt::prepare(db, "SELECT count(*) FROM sqlite_schema");
    if (!st) return std::unexpected(st.error());
    int rc = st->step();
    if (rc != SQLITE_ROW) return std::unexpected(sql::error(db, rc, fmt::format("{}: cannot read the schema", path)));
    return st->int64(0);
  }();
  if (!tables) return std::unexpected(tables.error());

  bool fresh = *app == 0 && *version == 0 && *tables == 0;
  if (!fresh && *app != kStoreApplicationId)
    return std::unexpected(StoreError{StoreErrc::corrupt, 0,
                                      fmt::format("{}: not a budgetd database (application_id {:#x})", path, *app)});
  if (!fresh && *version != kStoreSchemaVersion)
    return std::unexpected(StoreError{StoreErrc::corrupt, 0,
                                      fmt::format("{}: schema version {}, this budgetd reads version {}", path,
                                                  *version, kStoreSchemaVersion)});

  if (!memory) {
    // WAL: readers (Usage reports on the loop) run while the writer commits.
    auto st = sql::Stmt::prepare(db, "PRAGMA journal_mode = WAL");
    if (!st) return std::unexpected(st.error());
    int rc = st->step();
    if (rc != SQLITE_ROW) return std::unexpected(sql::error(db, rc, fmt::format("{}: cannot switch to WAL", path)));
    if (st->text(0) != "wal")
      return std::unexpected(StoreError{StoreErrc::other, 0,
                                        fmt::format("{}: journal mode is {}, WAL is required", path, st->text(0))});
  }
  // A checkpoint resets the WAL but leaves its file at its largest size; cap what stays.
  if (!memory) {
    if (auto r = sql::exec(db, "PRAGMA journal_size_limit = 67108864"); !r) return std::unexpected(r.error());
  }
  // FULL: in WAL mode the commit's fsync of the log is what makes an acked reply survive a
  // power loss, not just a crash of the daemon.
  if (auto r = sql::exec(db, memory ? "PRAGMA synchronous = OFF" : "PRAGMA synchronous = FULL"); !r)
    return std::unexpected(r.error());

  if (verify && !fresh) {
    auto st = sql::Stmt::prepare(db, "PRAGMA quick_check(1)");
    if (!st) return std::unexpected(st.error());
    int rc = st->step();
    if (rc != SQLITE_ROW)
      return std::unexpected(sql::error(db, rc, fmt::format("{}: integrity check failed", path)));
    if (st->text(0) != "ok")
      return std::unexpected(StoreError{StoreErrc::corrupt, SQLITE_CORRUPT,
                                        fmt::format("{}: damaged database: {}", path, st->text(0))});
  }

  if (fresh) {
    std::string ddl = fmt::format("BEGIN IMMEDIATE;{}PRAGMA application_id = {};PRAGMA user_version = {};COMMIT;",
                                  kSchema, kStoreApplicationId, kStoreSchemaVersion);
    if (auto r = sql::exec(db, ddl); !r) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      auto e = r.error();
      e.message = fmt::format("{}: cannot create the schema: {}", path, e.message);
      return std::unexpected(std::move(e));
    }
  }
  return {};
}

}  // namespace budgetd::daemon
