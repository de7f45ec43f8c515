# vfiomig — the two commands a newcomer needs:
#   make demo    build, then run the demo
#   make check   build, then run every test: plain (the real-kernel test under
#                qemu included), under ASan+UBSan, the unit tests under
#                valgrind, libFuzzer; ends with "N passed, N failed"
#   make docs    the reference manual from the headers (build/docs/html)
# Those three install missing packages first (apt, when run as root); plain
# `make` only builds, and leaves the system's packages alone. Builds made
# here treat warnings as errors; a release build (meson setup without
# -Dwerror=true) does not.

BUILD      ?= build
ASAN_BUILD ?= build-asan
VFIOMIG     = $(BUILD)/tools/vfiomig/vfiomig
MESON_TEST  = meson test --print-errorlogs --no-rebuild
# make check prints one line a test program as each ends (progress), and the
# failing cases' output once at the end (count-results.py)
MESON_RUN   = PYTHONUNBUFFERED=1 meson test --no-rebuild

.PHONY: all deps build build-asan build-fuzz check check-run demo docs bench fuzz clean format

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 20
BENCH_MAX_MIB ?= 256
BENCH_PRECOPY_MAX_MIB ?= 1024

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=true >/dev/null

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
	    -Dbuildtype=debug >/dev/null

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

demo: deps
	@$(MAKE) --no-print-directory build
	$(VFIOMIG) demo --large 256M

# The reference manual: Doxygen over the public headers' /** comments.
docs: deps
	@$(MAKE) --no-print-directory build
	ninja -C $(BUILD) docs
	@echo "docs: $(BUILD)/docs/html/index.html"

# Each suite's log is kept; the count is made from the TAP lines the tests
# print (one per test case), not from meson's per-binary summary. The
# libFuzzer runs (FUZZ_SECONDS each) need clang; without it they are skipped
# and the summary says so.
HAVE_CLANG := $(shell command -v clang >/dev/null 2>&1 && echo yes)

# In a second make, so that what deps installed (clang) is seen.
check: deps
	@$(MAKE) --no-print-directory check-run

check-run: build build-asan $(if $(HAVE_CLANG),build-fuzz)
	@rm -f $(BUILD)/meson-logs/*.json $(ASAN_BUILD)/meson-logs/*.json $(FUZZ_BUILD)/meson-logs/*.json
	@echo "== make check 1/4: the suite, plain (the real-kernel test under qemu included)"; \
	 $(MESON_RUN) -C $(BUILD) --logbase plain 2>&1 | ./scripts/progress.sh; \
	 echo "== make check 2/4: the suite under AddressSanitizer+UndefinedBehaviorSanitizer"; \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
	   $(MESON_RUN) -C $(ASAN_BUILD) --logbase asan 2>&1 | ./scripts/progress.sh; \
	 echo "== make check 3/4: the unit tests under valgrind"; \
	 $(MESON_RUN) -C $(BUILD) --setup valgrind --suite unit --logbase unit 2>&1 | ./scripts/progress.sh; \
	 echo "== make check 4/4: libFuzzer, $(FUZZ_SECONDS) s a target"; \
	 $(if $(HAVE_CLANG),$(MESON_RUN) -C $(FUZZ_BUILD) --suite fuzz --logbase fuzz 2>&1 | ./scripts/progress.sh;,\
	   echo "libFuzzer: skipped (clang is not installed)";) \
	 ./scripts/count-results.py \
	   plain=$(BUILD)/meson-logs/plain.json \
	   asan=$(ASAN_BUILD)/meson-logs/asan.json \
	   valgrind=$(BUILD)/meson-logs/unit-valgrind.json \
	   $(if $(HAVE_CLANG),libfuzzer=$(FUZZ_BUILD)/meson-logs/fuzz.json)

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) -Dwerror=true -Dfuzz=true -Dfuzz_seconds=$(FUZZ_SECONDS) \
	    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null

build-fuzz: deps $(FUZZ_BUILD)/build.ninja
	meson configure $(FUZZ_BUILD) -Dfuzz_seconds=$(FUZZ_SECONDS) >/dev/null
	ninja -C $(FUZZ_BUILD)

# Figures, not pass/fail; ratios against a baseline measured in the same run.
bench: build
	$(BUILD)/bench/bench_session $(BENCH_MAX_MIB)
	$(BUILD)/bench/bench_vfio_user $(BENCH_MAX_MIB)
	$(BUILD)/bench/bench_migrate 64 $(BENCH_MAX_MIB)
	$(BUILD)/bench/bench_precopy $(BENCH_PRECOPY_MAX_MIB)
	$(BUILD)/bench/bench_save $(BENCH_MAX_MIB)
	$(BUILD)/bench/bench_stopcopy $(BENCH_MAX_MIB)

# libFuzzer on every decoder, FUZZ_SECONDS each (needs clang):
#   make fuzz FUZZ_SECONDS=600
fuzz: build-fuzz
	$(MESON_TEST) -C $(FUZZ_BUILD) --suite fuzz --logbase fuzz

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
