# vfiomig — the two commands a newcomer needs:
#   make demo    build, then run the demo
#   make check   build, then run every test: plain, under ASan+UBSan, and the
#                unit tests under valgrind; ends with "N passed, N failed"
# Both install missing build packages first (apt, when run as root).

BUILD      ?= build
ASAN_BUILD ?= build-asan
VFIOMIG     = $(BUILD)/tools/vfiomig/vfiomig
MESON_TEST  = meson test --print-errorlogs --no-rebuild

.PHONY: all deps build build-asan check demo bench fuzz clean format

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
BENCH_MAX_MIB ?= 256

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) >/dev/null

$(ASAN_BUILD)/build.ninja: | deps
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false \
	    -Dbuildtype=debug >/dev/null

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

demo: build
	$(VFIOMIG) demo

# Each suite's log is kept; the count is made from the TAP lines the tests
# print (one per test case), not from meson's per-binary summary.
check: build build-asan
	@rm -f $(BUILD)/check-*.json
	@$(MESON_TEST) -C $(BUILD) --logbase plain >/dev/null 2>&1; \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
	   $(MESON_TEST) -C $(ASAN_BUILD) --logbase asan >/dev/null 2>&1; \
	 $(MESON_TEST) -C $(BUILD) --setup valgrind --suite unit --logbase unit >/dev/null 2>&1; \
	 ./scripts/count-results.py \
	   plain=$(BUILD)/meson-logs/plain.json \
	   asan=$(ASAN_BUILD)/meson-logs/asan.json \
	   valgrind=$(BUILD)/meson-logs/unit-valgrind.json

# Figures, not pass/fail; ratios against a baseline measured in the same run.
bench: build
	$(BUILD)/bench/bench_session $(BENCH_MAX_MIB)

# libFuzzer on the stream decoder, FUZZ_SECONDS long (needs clang).
fuzz: deps
	@[ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true \
	    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null
	ninja -C $(FUZZ_BUILD) fuzz/fuzz_stream fuzz/fuzz_stream_replay
	mkdir -p $(FUZZ_BUILD)/corpus-stream
	$(FUZZ_BUILD)/fuzz/fuzz_stream_replay --write-seeds $(FUZZ_BUILD)/corpus-stream
	$(FUZZ_BUILD)/fuzz/fuzz_stream -max_total_time=$(FUZZ_SECONDS) $(FUZZ_BUILD)/corpus-stream

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
