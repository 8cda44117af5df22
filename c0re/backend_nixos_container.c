#include "backend.h"
const BackendOps backend_nixos_container_ops = {.name = "nixos-container"};
