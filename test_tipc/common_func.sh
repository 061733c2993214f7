#!/usr/bin/env bash
# Helpers shared by test_tipc/prepare.sh and test_tipc/test_train_inference_python.sh.
#
# A TIPC config is a fixed sequence of `key:value` lines. The key of an option line is the
# literal text that goes on the command line (`-o Global.epochs`), the value is what follows the
# first colon. A value may list alternatives with `|` (`True|False`) or give one value per mode
# (`lite_train_lite_infer=2|whole_train_whole_infer=200`). `null` means "leave it out".
# Trailing whitespace on a line is ignored (PaddleClas's own files have some, e.g. after a
# section header), as upstream's parser ignores it.

shopt -s extglob

# tipc_key LINE -> the part before the first ':'
tipc_key() {
    local line="$1"
    printf '%s' "${line%%:*}"
}

# tipc_value LINE -> the part after the first ':'
tipc_value() {
    local line="$1"
    if [[ "${line}" != *:* ]]; then
        printf ''
        return
    fi
    printf '%s' "${line#*:}"
}

# tipc_mode_value VALUE MODE -> for `mode_a=1|mode_b=2` the entry of MODE; a VALUE without
# `mode=` entries is returned as is. A per-mode VALUE that has no entry for MODE gives `null`.
tipc_mode_value() {
    local value="$1" mode="$2" item found="null"
    if [[ "${value}" != *=* ]]; then
        printf '%s' "${value}"
        return
    fi
    local IFS='|'
    for item in ${value}; do
        if [[ "${item%%=*}" == "${mode}" ]]; then
            found="${item#*=}"
        fi
    done
    printf '%s' "${found}"
}

# tipc_param KEY VALUE -> `KEY=VALUE`, or nothing when the key or the value is null/empty.
tipc_param() {
    local key="$1" value="$2"
    if [[ -z "${key}" || "${key}" == "null" || -z "${value}" || "${value}" == "null" ]]; then
        printf ''
    else
        printf '%s=%s' "${key}" "${value}"
    fi
}

# tipc_status EXIT_CODE COMMAND MODEL RESULTS_LOG
# Prints and appends `Run successfully with command - MODEL - COMMAND!` (exit code 0) or
# `Run failed with command - MODEL - COMMAND!` (anything else) to RESULTS_LOG.
tipc_status() {
    local code="$1" command="$2" model="$3" results="$4" line
    # one line per step, whatever the command looks like
    command="$(printf '%s' "${command}" | tr -s ' \n\t' ' ')"
    command="${command# }"
    command="${command% }"
    if [[ "${code}" -eq 0 ]]; then
        line="Run successfully with command - ${model} - ${command}!"
    else
        line="Run failed with command - ${model} - ${command}!"
        TIPC_FAILED=$((${TIPC_FAILED:-0} + 1))
    fi
    printf '%s\n' "${line}" | tee -a "${results}"
}

# tipc_die MESSAGE: one line on stderr, exit 2 (a config or usage error, not a failed step).
tipc_die() {
    printf 'Error: %s\n' "$1" >&2
    exit 2
}

# tipc_read_config FILE -> fills the global array TIPC_LINES (1-based: TIPC_LINES[1] is line 1).
tipc_read_config() {
    local file="$1" line i=0
    [[ -f "${file}" ]] || tipc_die "TIPC config not found: ${file}"
    TIPC_LINES=("")
    while IFS= read -r line || [[ -n "${line}" ]]; do
        line="${line%%+([[:space:]])}"  # trailing blanks and a Windows '\r'
        TIPC_LINES+=("${line}")
        i=$((i + 1))
    done < "${file}"
}

# tipc_get VAR N KEY_PATTERN: check that line N's key matches KEY_PATTERN (a bash glob; the TIPC
# format is positional, so a line out of place is an error naming the file, the line and the key
# expected there) and store the line's value in VAR. With VAR_KEY given as a 4th argument the
# line's key is stored there too.
tipc_get() {
    local var="$1" n="$2" pattern="$3" keyvar="${4:-}" line key
    line="${TIPC_LINES[$n]-}"
    key="$(tipc_key "${line}")"
    # shellcheck disable=SC2053
    if [[ "${line}" != *:* || ( "${key}" != ${pattern} ) ]]; then
        local shown="${pattern#@(}"
        [[ "${shown}" != "${pattern}" ]] && shown="${shown%)}"  # @(a|b) -> a|b
        tipc_die "${TIPC_CONFIG}: line ${n} should be '${shown}:...', found '${line}'"
    fi
    printf -v "${var}" '%s' "$(tipc_value "${line}")"
    if [[ -n "${keyvar}" ]]; then
        printf -v "${keyvar}" '%s' "${key}"
    fi
}

# tipc_header N NAME: line N must be the section header `====...NAME====...`.
tipc_header() {
    local n="$1" name="$2" line
    line="${TIPC_LINES[$n]-}"
    if [[ ! "${line}" =~ ^=+${name}=+$ ]]; then
        tipc_die "${TIPC_CONFIG}: line ${n} should be the '===...${name}===...' header, found '${line}'"
    fi
}

# tipc_has_gpu -> exit 0 when Paddle is built with CUDA and sees at least one GPU.
tipc_has_gpu() {
    local python="$1" count
    count="$("${python}" -c 'import paddle
print(paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0)' 2>/dev/null | tail -n 1)"
    [[ "${count}" =~ ^[0-9]+$ && "${count}" -gt 0 ]]
}

# tipc_python NAME -> the interpreter to run: NAME when it runs and finds paddle, else the
# current one (`python`, then `python3`), with a note on stderr (PaddleClas's files name
# `python3.7`; a pyenv shim for a version that is not installed exists but does not run).
tipc_python() {
    local wanted="$1" candidate
    for candidate in "${wanted}" python python3; do
        if "${candidate}" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("paddle") is None)' \
                > /dev/null 2>&1; then
            if [[ "${candidate}" != "${wanted}" ]]; then
                echo "Note: '${wanted}' (line 3 of the TIPC config) does not run or has no paddle here; using '${candidate}' ($(command -v "${candidate}"))" >&2
            fi
            printf '%s' "${candidate}"
            return 0
        fi
    done
    tipc_die "no Python interpreter with paddle found ('${wanted}', python, python3)"
}

# Line 36 of a TIPC config names the whole_infer weights in one of three ways, as PaddleClas's
# files do: `pretrained_model_path:PATH` (ours), `pretrained_model_url:URL` (upstream downloads
# it; here the file name is used under ./pretrained_model/ and nothing is downloaded) or
# `inference_dir:...` (upstream: a folder inside a downloaded archive; here the default path).
TIPC_LINE36="@(pretrained_model_path|pretrained_model_url|inference_dir)"

# tipc_weights_path KEY VALUE MODEL_NAME -> the weights path (without .pdparams) whole_infer exports.
tipc_weights_path() {
    local key="$1" value="$2" model="$3" default="./pretrained_model/${3}_pretrained"
    if [[ -z "${value}" || "${value}" == "null" ]]; then
        printf '%s' "${default}"
        return
    fi
    case "${key}" in
        pretrained_model_path) printf '%s' "${value%.pdparams}" ;;
        pretrained_model_url)
            local base="${value##*/}"
            base="${base%%\?*}"
            base="${base%.pdparams}"
            if [[ -z "${base}" || "${base}" == *.tar || "${base}" == *.tgz || "${base}" == *.zip ]]; then
                printf '%s' "${default}"
            else
                printf './pretrained_model/%s' "${base}"
            fi
            ;;
        *) printf '%s' "${default}" ;;
    esac
}

# tipc_device VALUE HAS_GPU -> VALUE, or cpu (with a note on stderr) when VALUE asks for a GPU
# and there is none.
tipc_device() {
    local value="$1" has_gpu="$2"
    if [[ "${value}" == "gpu" && "${has_gpu}" -eq 0 ]]; then
        echo "Note: Global.device is 'gpu' in the TIPC config but no GPU is visible; running on the CPU" >&2
        printf 'cpu'
    else
        printf '%s' "${value}"
    fi
}

TIPC_MODES="lite_train_lite_infer lite_train_whole_infer whole_train_whole_infer whole_infer"

# tipc_open CONFIG MODE: check MODE, resolve CONFIG to an absolute path, cd to the repository
# root and read the config; sets TIPC_CONFIG and MODE. Both entry scripts start with it.
tipc_open() {
    TIPC_CONFIG="$1"
    MODE="$2"
    case " ${TIPC_MODES} " in
        *" ${MODE} "*) ;;
        *) tipc_die "unknown MODE '${MODE}'; expected one of: ${TIPC_MODES}" ;;
    esac
    [[ -f "${TIPC_CONFIG}" ]] || tipc_die "TIPC config not found: ${TIPC_CONFIG}"
    TIPC_CONFIG="$(cd "$(dirname "${TIPC_CONFIG}")" && pwd)/$(basename "${TIPC_CONFIG}")"
    cd "${ROOT}" || exit 2
    tipc_read_config "${TIPC_CONFIG}"
}
