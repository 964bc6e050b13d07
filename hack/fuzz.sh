#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a bounded time and prints, per target: duration,
# executions, crashes (and timeouts, out-of-memory), plus the saved regressions that still fail.
#
#   hack/fuzz.sh [SECONDS] [TARGET...]     default: 60 s for each target in fuzz/Cargo.toml
#
# Environment:
#   FUZZ_SANITIZER=address|none   (default address; falls back to none if ASan does not build)
#   FUZZ_JOBS=N                   parallel fuzzing workers per target (default 1)
#
# cargo-fuzz needs nightly flags (-Zsanitizer, -Cpasses=sancov…); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. libFuzzer runs in fork mode with crashes, timeouts and OOMs
# ignored, so a target keeps fuzzing for its whole time after a finding; every finding is saved
# under fuzz/artifacts/TARGET/ and counted. Seeds (fuzz/seeds/TARGET, committed) are copied into
# the working corpus (fuzz/corpus/TARGET, gitignored) first. Inputs under fuzz/regressions/TARGET
# are replayed before fuzzing: each one reproduces a crash found earlier and must pass once fixed.
#
# Leak detection is off (-detect_leaks=0): the engine keeps caches, metrics and a runtime across
# inputs by design, so LeakSanitizer would scan the heap after nearly every input (8x slower);
# memory growth is still bounded by -rss_limit_mb.
#
# Exit status: 0 when no target found anything and every regression passes.
set -euo pipefail

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs == 0)); then
	echo "usage: hack/fuzz.sh [SECONDS] [TARGET...]" >&2
	exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "== installing cargo-fuzz"
	cargo install cargo-fuzz --locked
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
	mapfile -t targets < <(cargo fuzz list)
fi

sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
host=$(rustc -vV | sed -n 's/^host: //p')

logdir=fuzz/artifacts/logs
mkdir -p "$logdir"
build() {
	if (($# == 0)); then
		cargo fuzz build --sanitizer "$sanitizer"
	else
		for t in "$@"; do cargo fuzz build --sanitizer "$sanitizer" "$t" || return 1; done
	fi
}
echo "== building ${targets[*]} (sanitizer: $sanitizer; log: $logdir/build.log)"
if ! build "$@" >"$logdir/build.log" 2>&1; then
	if [[ $sanitizer == none ]]; then
		tail -n 30 "$logdir/build.log" >&2
		exit 1
	fi
	echo "!! the $sanitizer sanitizer does not build here; falling back to --sanitizer none" >&2
	tail -n 10 "$logdir/build.log" >&2
	sanitizer=none
	build "$@" >"$logdir/build.log" 2>&1 || { tail -n 30 "$logdir/build.log" >&2; exit 1; }
fi

declare -a rows
status=0
for t in "${targets[@]}"; do
	corpus=fuzz/corpus/$t
	artifacts=fuzz/artifacts/$t
	mkdir -p "$corpus" "$artifacts"
	if [[ -d fuzz/seeds/$t ]]; then
		cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
	fi

	# Replay the saved regressions, one process each (a crash ends a process).
	reg_total=0 reg_failing=0
	if [[ -d fuzz/regressions/$t ]]; then
		for input in fuzz/regressions/"$t"/*; do
			[[ -f $input ]] || continue
			reg_total=$((reg_total + 1))
			if ! "fuzz/target/$host/release/$t" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 "$input" >"$logdir/$t.regression.log" 2>&1; then
				reg_failing=$((reg_failing + 1))
				echo "!! $t: regression still fails: $input" >&2
				grep -m1 -A1 -E "panicked at|ERROR: libFuzzer" "$logdir/$t.regression.log" >&2 || true
			fi
		done
	fi

	before=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
	marker=$(mktemp)
	echo "== fuzzing $t for ${secs}s"
	start=$(date +%s)
	set +e
	# The binary itself (built above), so a rebuild never eats into the target's time.
	"fuzz/target/$host/release/$t" -artifact_prefix="$artifacts/" \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 -print_final_stats=1 \
		-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
		"$corpus" >"$logdir/$t.log" 2>&1
	rc=$?
	set -e
	elapsed=$(($(date +%s) - start))
	# Fork mode prints "#N: cov: … exec/s: … oom/timeout/crash: A/B/C time: …s job: …".
	last=$(grep -E '^#[0-9]+: ' "$logdir/$t.log" | tail -n 1 || true)
	execs=$(sed -nE 's/^#([0-9]+): .*/\1/p' <<<"$last")
	counts=$(sed -nE 's|.*oom/timeout/crash: ([0-9]+)/([0-9]+)/([0-9]+).*|\1 \2 \3|p' <<<"$last")
	read -r ooms timeouts crashes <<<"${counts:-0 0 0}"
	findings=$(find "$artifacts" -maxdepth 1 -type f -newer "$marker" \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \))
	rm -f "$marker"
	after=$((before + $(grep -c . <<<"$findings" || true)))
	if ((rc != 0 && crashes == 0 && timeouts == 0 && ooms == 0)); then
		echo "!! $t: libFuzzer exited with $rc; see $logdir/$t.log" >&2
		tail -n 20 "$logdir/$t.log" >&2
		status=1
	fi
	if ((crashes + timeouts + ooms + reg_failing > 0)); then
		status=1
		grep . <<<"$findings" | head -n 3 | sed 's/^/   new finding: /' >&2 || true
		# Where the new crashes panic, each place once (fork mode keeps no child logs).
		grep /crash- <<<"$findings" | head -n 50 | while read -r input; do
			"fuzz/target/$host/release/$t" -detect_leaks=0 "$input" 2>&1 | grep -m1 "panicked at" |
				sed -E 's/^thread .* panicked at /   panics at /' || true
		done | sort | uniq -c >&2 || true
	fi
	rows+=("$(printf '%-16s %6ss %12s %7s %8s %5s %7s %11s' "$t" "$elapsed" "${execs:-?}" "$crashes" "$timeouts" "$ooms" "$after" "$reg_failing/$reg_total")")
done

echo
echo "== fuzz summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, sanitizer: $sanitizer, ${secs}s per target)"
printf '%-16s %7s %12s %7s %8s %5s %7s %11s\n' target time executions crashes timeouts ooms saved regressions
for row in "${rows[@]}"; do
	echo "$row"
done
echo "(crashes/timeouts/ooms: found in this run; saved: all findings under fuzz/artifacts/TARGET;"
echo " regressions: inputs under fuzz/regressions/TARGET still failing / total)"
exit "$status"
