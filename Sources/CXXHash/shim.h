#ifndef CACHEROUTE_CXXHASH_SHIM_H
#define CACHEROUTE_CXXHASH_SHIM_H
#include <xxhash.h>
#endif
