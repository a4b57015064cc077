# elmo_oscp — PGXS build.
#
#   make            build elmo_oscp.so, the install script and the ELMO simulator
#   make install    install the extension into the PostgreSQL found by PG_CONFIG
#   make test       install missing Debian packages, build, install, run every test
#   make test-ha    the same with Patroni, etcd and HAProxy: failover under load
#   make demo       the same set-up, then every ELMO flow against the bundled simulator
#   make bench      the inbound and outbound benchmarks, with their baselines

EXTENSION  = elmo_oscp
# The version lives in elmo_oscp.control only; C and SQL get it from here.
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = elmo_oscp
OBJS = \
	src/elmo_oscp.o \
	src/worker.o \
	src/http_server.o \
	src/routes.o \
	src/inbound.o \
	src/sender.o \
	src/http_client.o \
	src/outbox_wait.o \
	src/sql_functions.o

# The install script is assembled from readable pieces, in file-name order.
SQL_PARTS  = $(sort $(wildcard sql/elmo_oscp/*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA       = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*--*.sql))

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -DELMO_OSCP_VERSION='"$(EXTVERSION)"'
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK  = -lmicrohttpd -lcurl

# No LLVM bitcode: nothing here is worth inlining into JIT-compiled queries,
# and it would need clang on every machine that builds.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

all: sim/elmo-sim

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(EXTENSION).control
	{ echo '-- elmo_oscp $(EXTVERSION): generated from sql/elmo_oscp/*.sql, do not edit'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION elmo_oscp" to load this file. \quit'; \
	  for f in $(SQL_PARTS); do echo; echo "-- ==== $$f"; cat $$f; done; } > $@

$(OBJS): src/elmo_oscp.h
src/sender.o src/http_client.o: src/http_client.h

sim/elmo-sim: $(wildcard sim/*.c sim/*.h) sim/Makefile
	$(MAKE) -C sim

clean: clean-sim
clean-sim:
	-$(MAKE) -C sim clean

test:
	bash test/run.sh

test-ha:
	bash test/ha/run.sh

demo:
	bash test/demo.sh

bench:
	bash bench/run.sh

.PHONY: test test-ha demo bench clean-sim
