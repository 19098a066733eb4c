# shellcheck shell=bash
# tests/vm/lib.sh - helpers shared by the host-side VM test scripts (sourced, not run).
#
# Provides: logging (vm_log, vm_die), the cache location, a private apt configuration per
# Debian suite (vm_apt_setup), the cache lock (vm_lock) and the record of the kernel that
# fetch-kernel.sh chose (vm_kernel_load).
#
# Environment knobs read here:
#   P2PBUF_VM_CACHE   cache directory, outside the source tree (default /var/cache/p2pbuf-vm)
#   P2PBUF_VM_SOURCES host deb822 file to take the archive's address from
#                     (default /etc/apt/sources.list.d/debian.sources)

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_CACHE=${P2PBUF_VM_CACHE:-/var/cache/p2pbuf-vm}
VM_HOST_SOURCES=${P2PBUF_VM_SOURCES:-/etc/apt/sources.list.d/debian.sources}
export VM_DIR VM_CACHE

vm_log() { printf '[vm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
vm_die() { printf '[vm] error: %s\n' "$*" >&2; exit 1; }

# vm_lock: serialize writers of the cache. A parent that already holds the lock exports
# P2PBUF_VM_LOCKED=1 so that the scripts it runs do not wait for themselves.
vm_lock() {
	mkdir -p "$VM_CACHE"
	if [ "${P2PBUF_VM_LOCKED:-0}" = 1 ]; then
		return 0
	fi
	exec 9>"$VM_CACHE/.lock"
	flock 9
	export P2PBUF_VM_LOCKED=1
}

# vm_main_stanza: print the host's first deb822 stanza for the main archive (not security).
# The mirror's address is only ever read from the host's own file at run time.
vm_main_stanza() {
	if [ -r "$VM_HOST_SOURCES" ]; then
		awk 'BEGIN { RS = ""; ORS = "\n" }
		     /(^|\n)Types:[^\n]*deb/ && !/(^|\n)URIs:[^\n]*security/ { print; exit }' \
			"$VM_HOST_SOURCES"
		return 0
	fi
	# One-line format fallback: "deb [opts] URI suite components".
	awk '$1 == "deb" && $0 !~ /security/ {
		i = 2; opts = ""
		if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
		print "Types: deb"; print "URIs: " $i; print "Suites: x"; print "Components: main"
		if (opts ~ /signed-by=/) { sub(/.*signed-by=/, "", opts); sub(/[] ].*/, "", opts)
			print "Signed-By: " opts }
		exit }' /etc/apt/sources.list
}

# vm_apt_setup SUITE: create (or refresh) a private apt configuration for one suite under
# $VM_CACHE/apt/SUITE and export APT_CONFIG pointing at it. The host's apt state is untouched.
vm_apt_setup() {
	local suite=$1 d="$VM_CACHE/apt/$1" stanza
	mkdir -p "$d/sources.list.d" "$d/preferences.d" "$d/lists/partial" \
		"$d/cache/archives/partial"
	stanza=$(vm_main_stanza)
	[ -n "$stanza" ] || vm_die "no Debian archive found in $VM_HOST_SOURCES"
	printf '%s\n' "$stanza" |
		sed -E -e "s/^Suites:.*/Suites: $suite/" -e 's/^Components:.*/Components: main/' \
			>"$d/sources.list.d/debian.sources"
	[ -e "$d/status" ] || : >"$d/status"
	cat >"$d/apt.conf" <<-EOF
		Dir::Etc::sourcelist "/dev/null";
		Dir::Etc::sourceparts "$d/sources.list.d";
		Dir::Etc::preferences "/dev/null";
		Dir::Etc::preferencesparts "$d/preferences.d";
		Dir::State "$d";
		Dir::State::Lists "$d/lists";
		Dir::State::status "$d/status";
		Dir::Cache "$d/cache";
		Dir::Cache::pkgcache "pkgcache.bin";
		Dir::Cache::srcpkgcache "srcpkgcache.bin";
		APT::Architecture "amd64";
		APT::Architectures { "amd64"; };
		Acquire::Languages "none";
		Acquire::Retries "1";
		Acquire::http::Timeout "20";
		#clear APT::Update::Post-Invoke-Success;
		#clear APT::Update::Post-Invoke;
		#clear DPkg::Post-Invoke;
	EOF
	# As root, apt drops to _apt for downloads, which cannot write into our root-owned cache.
	if [ "$(id -u)" = 0 ]; then
		echo 'APT::Sandbox::User "root";' >>"$d/apt.conf"
	fi
	export APT_CONFIG="$d/apt.conf"
}

# vm_kernel_load: read the record written by fetch-kernel.sh (KVER, KPKGVER, KSUITE, KROOT,
# VMLINUZ, MODDIR) into the environment.
vm_kernel_load() {
	local f="$VM_CACHE/kernel/current.env"
	[ -r "$f" ] || vm_die "no kernel fetched yet: run tests/vm/fetch-kernel.sh"
	# shellcheck source=/dev/null
	. "$f"
}

# vm_now: seconds since the epoch with a fraction, for step timings.
vm_now() { date +%s.%N; }
vm_elapsed() { awk -v a="$1" -v b="$(vm_now)" 'BEGIN { printf "%.1f", b - a }'; }
