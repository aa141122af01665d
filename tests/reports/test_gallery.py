"""The run gallery: a self-contained page whose every reference is a relative file inside its own folder."""

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from urllib.parse import unquote

import pytest
from PIL import Image

from dataflow.reports import build_gallery, build_gallery_from_manifest
from tests.conftest import edit_row, write_image, write_jsonl

ERROR = 'model said <b>no</b> & "stopped"'


def make_run(root):
    """A finished run by hand: inputs in root/data, run started in root, outputs in root/out.

    Rows 0 and 1 are done (row 1 has two outputs), row 2 failed with an error full of HTML characters.
    """
    data, out = root / "data", root / "out"
    for folder in (data, out / "sample_0", out / "sample_1"):
        folder.mkdir(parents=True)
    write_image(data / "wide.png", 400, 200, seed=1)
    write_image(data / "tall.jpg", 100, 300, seed=2)
    input_file = write_jsonl(data / "edits.jsonl", [
        edit_row("wide.png", "Make it <brighter> & warmer.", id="a"),
        edit_row("tall.jpg", "Add a hat.", id="b"),
        edit_row("wide.png", "Say \"hi\".", id="c"),
    ])
    outputs = [
        [write_image(out / "sample_0" / "sample_0_0.png", 400, 200, seed=3)],
        [write_image(out / "sample_1" / f"sample_1_{k}.png", 100, 300, seed=4 + k) for k in range(2)],
    ]
    # as the image writer produces them: relative to the run's working directory
    outputs = [[os.path.relpath(p, root) for p in paths] for paths in outputs]
    rows = [json.loads(line) for line in open(input_file, encoding="utf-8")]
    rows[0]["output_image"], rows[1]["output_image"] = outputs
    rows[2].update({"output_image": [], "output_image_error": ERROR})
    output_file = write_jsonl(out / "result.jsonl", rows)
    return input_file, output_file


def references(page_path) -> list[str]:
    """Every src and href value of the page, unescaped."""
    with open(page_path, encoding="utf-8") as handle:
        text = handle.read()
    return [html.unescape(v) for v in re.findall(r'\b(?:src|href)="([^"]*)"', text)]


def assert_references_are_local(page_path):
    """Every reference is a relative path to a file inside the page's folder."""
    folder = os.path.realpath(os.path.dirname(page_path))
    refs = references(page_path)
    assert refs
    for ref in refs:
        assert "://" not in ref and not ref.startswith(("/", "\\")), ref
        target = os.path.realpath(os.path.join(folder, unquote(ref)))
        assert target.startswith(folder + os.sep), ref
        assert os.path.isfile(target), ref
    return refs


def build(root, input_file, output_file, **kwargs):
    return build_gallery(output_file, input_dir=os.path.dirname(input_file), run_dir=str(root), **kwargs)


def test_gallery_shows_rows_with_local_thumbnails_and_survives_a_move(tmp_path):
    input_file, output_file = make_run(tmp_path / "run")
    page = build(tmp_path / "run", input_file, output_file)
    assert page == os.path.join(os.path.dirname(output_file), "result.gallery.html")
    text = open(page, encoding="utf-8").read()
    assert html.escape(ERROR, quote=True) in text and ERROR not in text
    assert "Make it &lt;brighter&gt; &amp; warmer." in text and "Say &quot;hi&quot;." in text
    assert "3 rows · 2 done · 1 failed" in text
    assert "id: a" in text and "id: c" in text

    refs = assert_references_are_local(page)
    thumbs = [r for r in refs if r.startswith("gallery_files/")]
    assert sorted(thumbs) == sorted(f"gallery_files/result/{name}" for name in [
        "row0_in.jpg", "row0_out0.jpg", "row1_in.jpg", "row1_out0.jpg", "row1_out1.jpg", "row2_in.jpg"])
    links = [r for r in refs if not r.startswith("gallery_files/")]
    assert sorted(links) == ["sample_0/sample_0_0.png", "sample_1/sample_1_0.png", "sample_1/sample_1_1.png"]
    for thumb in thumbs:
        with Image.open(os.path.join(os.path.dirname(page), thumb)) as image:
            assert max(image.size) <= 320
    with Image.open(os.path.join(os.path.dirname(page), "gallery_files/result/row0_in.jpg")) as image:
        assert image.size == (320, 160)  # shrunk, aspect ratio kept
    with Image.open(os.path.join(os.path.dirname(page), "gallery_files/result/row1_in.jpg")) as image:
        assert image.size == (100, 300)  # small enough already: never enlarged

    moved = tmp_path / "elsewhere" / "out"
    moved.parent.mkdir()
    shutil.move(os.path.dirname(output_file), moved)
    assert_references_are_local(moved / "result.gallery.html")


def test_rebuilding_overwrites_and_removes_stale_thumbnails(tmp_path):
    input_file, output_file = make_run(tmp_path)
    page = build(tmp_path, input_file, output_file)
    first = open(page, encoding="utf-8").read()
    files = os.path.join(os.path.dirname(page), "gallery_files", "result")
    thumbs = {n: open(os.path.join(files, n), "rb").read() for n in os.listdir(files)}

    assert build(tmp_path, input_file, output_file) == page
    assert open(page, encoding="utf-8").read() == first  # deterministic: no timestamps
    assert {n: open(os.path.join(files, n), "rb").read() for n in os.listdir(files)} == thumbs

    build(tmp_path, input_file, output_file, limit=1, thumb_size=64)
    assert sorted(os.listdir(files)) == ["row0_in.jpg", "row0_out0.jpg"]
    text = open(page, encoding="utf-8").read()
    assert "Showing the first 1 of 3 rows" in text and "3 rows · 2 done · 1 failed" in text
    with Image.open(os.path.join(files, "row0_in.jpg")) as image:
        assert image.size == (64, 32)


def test_missing_and_broken_images_get_a_note_not_an_exception(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [
        edit_row("gone.png", "x", output_image=["nowhere/sample_0_0.png"]),
        edit_row("broken.png", "y", output_image=[]),
        {"images": 7, "conversations": {"just": "text"}, "output_image": [None]},
    ]
    output_file = write_jsonl(tmp_path / "result.jsonl", rows)
    text = open(build_gallery(output_file), encoding="utf-8").read()
    assert "input image unavailable: image file not found" in text
    assert "output 0 image unavailable: output image not found: nowhere/sample_0_0.png" in text
    assert "input image unavailable: not a readable image file" in text
    assert "input image unavailable: &#x27;images&#x27; must be a path string or a list of them" in text
    assert "instruction unavailable: &#x27;conversations&#x27; holds a str where a message object was" in text
    assert "{&quot;just&quot;: &quot;text&quot;}" in text  # the raw value is shown
    assert "3 rows · 1 done · 0 failed · 2 without output" in text
    assert "<img" not in text


def test_each_step_file_gets_its_own_gallery(tmp_path):
    """A filter step's gallery used to replace the run's, so the run's page showed only the kept rows."""
    input_file, output_file = make_run(tmp_path)
    kept = write_jsonl(os.path.join(os.path.dirname(output_file), "filtered_step1.jsonl"),
                       [json.loads(open(output_file, encoding="utf-8").readline())])
    run_page, kept_page = build(tmp_path, input_file, output_file), build(tmp_path, input_file, kept)
    assert os.path.basename(kept_page) == "filtered_step1.gallery.html" and run_page != kept_page
    assert "3 rows · 2 done · 1 failed" in open(run_page, encoding="utf-8").read()
    assert "1 row · 1 done · 0 failed" in open(kept_page, encoding="utf-8").read()
    assert len(assert_references_are_local(run_page)) == 9  # the other page's build left its thumbnails alone
    assert len(assert_references_are_local(kept_page)) == 3


def test_each_picture_shows_the_full_size_image_dimensions(tmp_path):
    input_file, output_file = make_run(tmp_path)
    text = open(build(tmp_path, input_file, output_file, thumb_size=64), encoding="utf-8").read()
    assert text.count('<div class="size">400×200</div>') == 3  # two inputs and one output: not the thumbnails
    assert text.count('<div class="size">100×300</div>') == 3


def test_ids_do_not_break_mid_word_and_keep_their_full_text(tmp_path):
    input_file, output_file = make_run(tmp_path)
    text = open(build(tmp_path, input_file, output_file), encoding="utf-8").read()
    (rule,) = re.findall(r"\.id \{[^}]*\}", text)
    assert "break-all" not in rule and "white-space: nowrap" in rule
    assert '<div class="id" title="a">id: a</div>' in text


def test_a_huge_instruction_and_error_are_shown_by_their_start_and_length(tmp_path):
    write_image(tmp_path / "a.png", 40, 20)
    instruction, error = "make it brighter, " * 600_000 + "then flip it", "x" * 1_000_000
    output_file = write_jsonl(tmp_path / "result.jsonl", [
        edit_row("a.png", instruction, output_image=[], output_image_error=error)])
    page = build_gallery(output_file)
    text = open(page, encoding="utf-8").read()
    assert os.path.getsize(page) < 20_000
    assert "(10,800,012 characters)" in text and "(1,000,000 characters)" in text


def test_absolute_output_paths_and_custom_keys(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = write_image(data / "in.png", 50, 40)
    output = write_image(tmp_path / "elsewhere.png", 50, 40, seed=9)  # outside the gallery's folder
    out = tmp_path / "out"
    out.mkdir()
    row = {"pic": source, "chat": [{"from": "human", "value": "Blur it."}], "edited": [output]}
    output_file = write_jsonl(out / "result.jsonl", [row])
    page = build_gallery(output_file, image_key="pic", conversation_key="chat", output_key="edited")
    text = open(page, encoding="utf-8").read()
    assert "Blur it." in text and "1 row · 1 done · 0 failed" in text
    assert "<a href" not in text  # the full-size output lies outside the folder: no link that would break
    assert sorted(assert_references_are_local(page)) == ["gallery_files/result/row0_in.jpg",
                                                         "gallery_files/result/row0_out0.jpg"]


def test_manifest_supplies_the_folders_and_keys(tmp_path, monkeypatch):
    input_file, output_file = make_run(tmp_path / "run")
    manifest = {"input": input_file, "cwd": str(tmp_path / "run"), "image_key": "images",
                "conversation_key": "conversations", "output_key": "output_image"}
    with open(os.path.join(os.path.dirname(output_file), "run.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    monkeypatch.chdir(tmp_path)  # the gallery must not depend on where it is built from
    page = build_gallery_from_manifest(output_file)
    text = open(page, encoding="utf-8").read()
    assert "image unavailable" not in text
    assert len(assert_references_are_local(page)) == 9


def test_without_manifest_a_moved_output_folder_still_finds_its_outputs(tmp_path):
    input_file, output_file = make_run(tmp_path / "run")
    moved = tmp_path / "moved"
    shutil.move(os.path.dirname(output_file), moved)
    text = open(build_gallery_from_manifest(str(moved / "result.jsonl")), encoding="utf-8").read()
    assert text.count("output 0 image unavailable") == 0 and text.count("input image unavailable") == 3


# -- a real browser --------------------------------------------------------------------------------------------
PROBE = """<script>
window.addEventListener("load", function () {
  var result = document.createElement("pre");
  result.id = "probe-result";
  result.textContent = JSON.stringify(Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), width: img.naturalWidth, shown: img.clientWidth,  // inside its border
            declared: Number(img.getAttribute("width"))};
  }));
  document.body.appendChild(result);
});
</script>
"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_gallery_loads_in_headless_chromium_and_every_image_decodes(tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    input_file, output_file = make_run(tmp_path / "run")
    rows = [json.loads(line) for line in open(output_file, encoding="utf-8")]
    rows[2]["output_image_error"] = "a long error that once squeezed the input thumbnail beside it " * 40
    write_jsonl(output_file, rows)
    moved = tmp_path / "moved out"  # a space in the folder name, as file:// URLs must encode it
    shutil.move(os.path.dirname(build(tmp_path / "run", input_file, output_file)), moved)

    page = open(moved / "result.gallery.html", encoding="utf-8").read()
    # Lazy images below the fold may never load headless; the probe loads them all at once instead.
    probe = moved / "probe.html"
    probe.write_text(page.replace(' loading="lazy"', "").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    dom = done.stdout
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert match, f"no probe result (rc={done.returncode}); stderr: {done.stderr[-2000:]}"
    assert "<h1>Gallery of result.jsonl</h1>" in dom
    images = json.loads(html.unescape(match.group(1)))
    assert len(images) == 6
    assert all(img["width"] > 0 for img in images), images
    assert all(img["shown"] == img["declared"] for img in images), images  # no thumbnail shrunk by the layout
