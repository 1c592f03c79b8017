// RocksDB's C API (Debian's librocksdb-dev). Swift cannot import its C++ API, so the engine uses this.
#include <rocksdb/c.h>
