#include "backend.h"
const BackendOps backend_nspawn_ops = {.name = "nspawn"};
