#include "backend.h"
const BackendOps backend_process_ops = {.name = "process"};
