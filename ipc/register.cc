#include "ipc/methods.h"

namespace budgetd::ipc {

void register_all(Service& service) {
  for (auto text : interface_files()) service.add_interface(text);
  register_agent_methods(service);
  register_admin_methods(service);
  register_usage_methods(service);
}

}  // namespace budgetd::ipc
