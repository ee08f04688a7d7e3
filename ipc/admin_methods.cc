// io.budgetd.Admin: operator methods. (Filled in by the admin-interface work.)
#include "ipc/methods.h"

namespace budgetd::ipc {

void register_admin_methods(Service&) {}

}  // namespace budgetd::ipc
