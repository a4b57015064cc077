# elmo_oscp — PGXS build.
#
#   make            build elmo_oscp.so and the install script
#   make install    install the extension into the PostgreSQL found by PG_CONFIG
#   make sim        build the ELMO simulator (sim/elmo-sim; needs libjansson-dev)
#   make installcheck  the pg_regress tests against a running server that has
#                   elmo_oscp installed and preloaded (PGHOST, PGPORT, PGUSER)
#   make META.json  PGXN's metadata, from META.json.in and elmo_oscp.control
#   make test       install missing Debian packages, build, install, run every test
#   make test-ha    the same with Patroni, etcd and HAProxy: failover under load
#   make demo       the same set-up, then every ELMO flow against the bundled simulator
#   make bench      the inbound and outbound benchmarks, with their baselines
#   make fuzz       a fuzzing campaign against the listener (FUZZ_SEED, FUZZ_CASES)
#   make deb        the Debian package for this system's PostgreSQL, into dist/
#   make test-majors  the suite and the packages on PostgreSQL 17 and 18 (chroots; root)
#   make check-valgrind  the suites with every server process under memcheck

EXTENSION  = elmo_oscp
# The version lives in elmo_oscp.control only; C, SQL and META.json get it from here.
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
ABSTRACT   = $(shell sed -n "s/^comment *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = elmo_oscp
# In layers, calls going down only (src/CONTRACT.md; src/layers.sh checks it):
# 0 the transport, plain C (compiled with src/no_postgres.h in front);
# 1 PostgreSQL helpers; 2 inbound, outbound, tokens, SQL-callable; 3 the loop;
# 4 the module entry.
TRANSPORT_OBJS = src/addresses.o src/connections.o src/routes.o src/http_server.o src/http_client.o
OBJS = \
	$(TRANSPORT_OBJS) \
	src/settings.o src/shmem.o src/ids.o src/statements.o src/durability.o src/log_filter.o \
	src/db.o src/connect.o src/drop_guard.o \
	src/inbound.o src/sender.o src/tokens.o src/sql_api.o src/rfc3339.o src/capacity.o src/run_as.o \
	src/worker.o \
	src/elmo_oscp.o

# The install script is assembled from readable pieces, in file-name order.
# Parts named *schema* (tables, indexes, roles) run once, at CREATE EXTENSION;
# every other part is code (functions, views, privileges) that can run again.
# An update script is generated from its hand-written migration,
# sql/migrations/<from>--$(EXTVERSION).sql, followed by every code part
# (sql/README.md).  Released scripts are committed and installed as they are.
SQL_PARTS  = $(sort $(wildcard sql/elmo_oscp/*.sql))
SQL_SCHEMA = $(filter $(wildcard sql/elmo_oscp/*schema*.sql),$(SQL_PARTS))
SQL_CODE   = $(filter-out $(SQL_SCHEMA),$(SQL_PARTS))
MIGRATIONS = $(wildcard sql/migrations/*--$(EXTVERSION).sql)
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql \
             $(patsubst sql/migrations/%,sql/$(EXTENSION)--%,$(MIGRATIONS))
DATA       = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

# make installcheck: sql/<test>.sql against expected/<test>.out, in a fresh
# database (contrib_regression) of the server PGHOST/PGPORT name, as a
# superuser.  They assume nothing of that server but elmo_oscp preloaded: not
# which database the worker serves, nor any other setting.
REGRESS = install guc_defaults other_database privileges drop_guard

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -DELMO_OSCP_VERSION='"$(EXTVERSION)"'
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK  = -lmicrohttpd -lcurl

# No LLVM bitcode: nothing here is worth inlining into JIT-compiled queries,
# and it would need clang on every machine that builds.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS) $(EXTENSION).control
	{ echo '-- elmo_oscp $(EXTVERSION): generated from sql/elmo_oscp/*.sql, do not edit'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION elmo_oscp" to load this file. \quit'; \
	  for f in $(SQL_PARTS); do echo; echo "-- ==== $$f"; cat $$f; done; } > $@

# An update script: its migration, then every code part.
sql/$(EXTENSION)--%.sql: sql/migrations/%.sql $(SQL_CODE) $(EXTENSION).control
	{ echo '-- elmo_oscp update $*: generated from sql/migrations/$*.sql and the code parts of sql/elmo_oscp/, do not edit'; \
	  printf '%s\n' '\echo Use "ALTER EXTENSION elmo_oscp UPDATE" to load this file. \quit'; \
	  for f in $< $(SQL_CODE); do echo; echo "-- ==== $$f"; cat $$f; done; } > $@

# PGXN's META.json: committed, and made again whenever elmo_oscp.control
# changes (a test fails when the two disagree).
META.json: META.json.in $(EXTENSION).control
	sed -e 's|@VERSION@|$(EXTVERSION)|g' -e 's|@ABSTRACT@|$(ABSTRACT)|g' $< > $@

$(OBJS): $(wildcard $(srcdir)/src/*.h) $(EXTENSION).control
$(TRANSPORT_OBJS): override CPPFLAGS += -include $(srcdir)/src/no_postgres.h

all: check-layers
check-layers: $(OBJS)
	@sh $(srcdir)/src/layers.sh $(OBJS)

# The simulator is a test and demo tool: the extension never builds or links
# it, so a database server needs no jansson.  test/run.sh and test/demo.sh
# build it after test/deps.sh has installed what it needs.
sim:
	$(MAKE) -C sim

clean: clean-sim clean-fuzz
clean-sim:
	-$(MAKE) -C sim clean
clean-fuzz:
	-$(MAKE) -C test/fuzz clean

test:
	bash test/run.sh

test-ha:
	bash test/ha/run.sh

demo:
	bash test/demo.sh

bench:
	bash bench/run.sh

# The regression cases, then FUZZ_CASES (20000) cases of FUZZ_SEED (random, printed).
fuzz:
	bash test/fuzz/run.sh

deb:
	bash tools/build-deb.sh

test-majors:
	bash test/majors.sh

check-valgrind:
	bash test/valgrind/run.sh

.PHONY: sim test test-ha demo bench fuzz check-valgrind clean-sim clean-fuzz check-layers deb test-majors
