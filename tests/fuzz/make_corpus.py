#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora under tests/fuzz/corpus/<target>/.

usage: make_corpus.py SEED_README CALIBRATION_CONFIG...

The seeds: the INT8 config example in the seed's README (its ```json block), the configs
given (as IPEX_MODE=calibration wrote them), the fp32/bf16 override examples of our README,
then truncated and mutated versions of each, and for the environment table a set of
environments in settings_fuzz.cpp's input format. Files already in a corpus directory
(regression inputs saved from crashes) are left alone; a seed is named by its origin.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as out:
        out.write(data)


def truncations(name, text):
    """The text cut at a third, a half, two thirds and one byte short of the end."""
    for label, cut in (("third", len(text) // 3), ("half", len(text) // 2),
                       ("two_thirds", 2 * len(text) // 3), ("one_short", len(text) - 1)):
        yield f"{name}.cut_{label}", text[:cut]


def json_seeds(readme, calibration_configs):
    """(name, text) of the JSON seeds for the int8 target, and the float ones separately."""
    block = re.search(r"```json\n(.*?)```", open(readme, encoding="utf-8").read(), re.S)
    seed_example = block.group(1)
    int8 = [("seed_readme", seed_example)]
    for path in calibration_configs:
        name = "calibration_" + os.path.splitext(os.path.basename(path))[0]
        text = open(path, encoding="utf-8").read()
        if len(text) > 4096:  # the targets run with -max_len=4096: the same config, compact
            text = json.dumps(json.loads(text), separators=(",", ":"))
        int8.append((name, text))
    entries = json.loads(seed_example)
    one = entries[0]

    def variant(name, change):
        entry = json.loads(json.dumps(one))
        change(entry)
        int8.append((f"seed_entry.{name}", json.dumps([entry])))

    variant("scale_zero", lambda e: e.update(inputs_scale=[0]))
    variant("scale_negative", lambda e: e.update(outputs_scale=[-1.5]))
    variant("scale_string", lambda e: e.update(inputs_scale=["25.0"]))
    variant("scale_empty", lambda e: e.update(inputs_scale=[]))
    variant("flags_short", lambda e: e.update(inputs_scale=[1.0, 2.0]))
    variant("unknown_name", lambda e: e.update(name="Convolutoin"))
    variant("unknown_field", lambda e: e.update(colour="blue"))
    variant("no_quantized", lambda e: e.pop("quantized"))
    variant("id_float", lambda e: e.update(id=0.0))
    variant("ranges", lambda e: e.update(inputs_min=[-1.0], inputs_max=[1.0], sqnr_db=30.5,
                                         calls=4, key="Convolution(w=1)#0"))
    variant("min_above_max", lambda e: e.update(inputs_min=[2.0], inputs_max=[1.0]))
    int8.append(("seed_entries.duplicate_id", json.dumps([one, one])))
    int8.append(("seed_entries.unreadable_id_first", json.dumps([dict(one, id=-1), one])))
    int8.append(("object_not_list", json.dumps(one)))
    float_mode = [
        ("readme_example", '{"keep_fp32": ["linear", "matmul"], "fusion": false}'),
        ("readme_typo", '{"keep_fp32": ["lineer"]}'),
        ("fusion_string", '{"fusion": "no", "keep_fp32": "linear"}'),
        ("mixed", '{"keep_fp32": ["conv2d", 3, null, "relu"], "extra": {"a": [1]}}'),
        ("int8_list", seed_example),
        ("empty_object", "{}"),
    ]
    return int8, float_mode


def odd_json():
    """Inputs at the parser's edges."""
    return [
        ("nested_32", "[" * 32 + "]" * 32),
        ("nested_33", "[" * 33 + "]" * 33),
        ("nested_in_string", '["' + "[" * 100 + '"]'),
        ("escaped_quote", r'["a\"[[[[", {"b": "\\"}]'),
        ("unterminated_string", '{"keep_fp32": ["lin'),
        ("nul_escape", r'{"k\u0000ey": "\u0000"}'),
        ("lone_surrogate", r'["\ud800"]'),
        ("surrogate_pair", r'["\ud83d\ude00"]'),
        ("huge_exponent", "[1e400, -1e400, 1e-400]"),
        ("huge_integer", "[18446744073709551616, -9223372036854775809, 9223372036854775808]"),
        ("negative_zero", "[-0, -0.0]"),
        ("bom", "\ufeff[]"),
        ("nan_literal", "[NaN, Infinity]"),
        ("comment", "[1, /* two */ 2]"),
        ("trailing_comma", "[1, 2,]"),
        ("bad_utf8", b'["\xff\xfe"]'),
        ("control_in_string", '["a\nb"]'),
        ("escaped_newline_key", r'{"a\nb": 1}'),
    ]


def settings_seeds():
    """Environments in settings_fuzz.cpp's format: a 16-bit mask of the table's variables
    (in table order: IPEX_MODE, IPEX_CONFIG, IPEX_VERBOSE, IPEX_FUSION, IPEX_STRICT,
    IPEX_INT8_ALGORITHM, IPEX_INT8_GRANULARITY, IPEX_INT8_MIN_SQNR, IPEX_BF16_EMULATION,
    IPEX_BUFFER_CACHE_MB, OMP_NUM_THREADS), then the set ones' values separated by NUL."""
    order = ["IPEX_MODE", "IPEX_CONFIG", "IPEX_VERBOSE", "IPEX_FUSION", "IPEX_STRICT",
             "IPEX_INT8_ALGORITHM", "IPEX_INT8_GRANULARITY", "IPEX_INT8_MIN_SQNR",
             "IPEX_BF16_EMULATION", "IPEX_BUFFER_CACHE_MB", "OMP_NUM_THREADS"]

    def environment(values):
        mask = 0
        for name in values:
            mask |= 1 << order.index(name)
        body = b"\0".join(values[name].encode() for name in order if name in values)
        return bytes([mask & 0xff, mask >> 8]) + body

    return [
        ("readme_bf16", environment({"IPEX_MODE": "bf16", "IPEX_VERBOSE": "1"})),
        ("calibration", environment({"IPEX_MODE": "calibration", "IPEX_CONFIG": "/tmp/c.json",
                                     "IPEX_INT8_ALGORITHM": "percentile",
                                     "IPEX_INT8_GRANULARITY": "per_tensor",
                                     "IPEX_INT8_MIN_SQNR": "20.5"})),
        ("calibration_mse", environment({"IPEX_MODE": "calibration",
                                         "IPEX_CONFIG": "/tmp/c.json",
                                         "IPEX_INT8_ALGORITHM": "mse"})),
        ("int8_strict", environment({"IPEX_MODE": "inference", "IPEX_CONFIG": "c.json",
                                     "IPEX_STRICT": "1", "OMP_NUM_THREADS": "4,2"})),
        ("all_set", environment({"IPEX_MODE": "fp32", "IPEX_CONFIG": "x", "IPEX_VERBOSE": "2",
                                 "IPEX_FUSION": "0", "IPEX_STRICT": "0",
                                 "IPEX_INT8_ALGORITHM": "min_max",
                                 "IPEX_INT8_GRANULARITY": "per_channel",
                                 "IPEX_INT8_MIN_SQNR": "0", "IPEX_BF16_EMULATION": "1",
                                 "IPEX_BUFFER_CACHE_MB": "1048576", "OMP_NUM_THREADS": "4096"})),
        ("bad_values", environment({"IPEX_MODE": "fast", "IPEX_CONFIG": "", "IPEX_VERBOSE": "3",
                                    "IPEX_FUSION": "off", "IPEX_INT8_MIN_SQNR": "nan",
                                    "IPEX_BUFFER_CACHE_MB": "-1", "OMP_NUM_THREADS": "0"})),
        ("number_edges", environment({"IPEX_VERBOSE": " 1", "IPEX_INT8_MIN_SQNR": "1e2",
                                      "IPEX_BUFFER_CACHE_MB": "+5",
                                      "OMP_NUM_THREADS": "99999999999999999999"})),
    ]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    int8, float_mode = json_seeds(sys.argv[1], sys.argv[2:])
    odd = odd_json()
    for name, text in int8:
        write("int8_config", name + ".json", text)
        write("json_file", name + ".json", text)
    for name, text in int8[:3]:
        for cut_name, cut in truncations(name, text):
            write("int8_config", cut_name + ".json", cut)
            write("json_file", cut_name + ".json", cut)
    for name, text in float_mode:
        write("float_mode_config", name + ".json", text)
        write("json_file", "float_" + name + ".json", text)
    for cut_name, cut in truncations("readme_example", float_mode[0][1]):
        write("float_mode_config", cut_name + ".json", cut)
    for name, text in odd:
        write("json_file", name + ".json", text)
    for name, data in settings_seeds():
        write("settings", name, data)


if __name__ == "__main__":
    main()
