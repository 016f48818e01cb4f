"""Stairwell posters (楼栋二维码): a permanent WeChat QR code per building, printed on A4.

`linli qr buildings` asks WeChat for one permanent parametric QR code per building, with the
scene ``building:<id>`` (handlers.binding): scanning it follows the official account and starts
binding with that building filled in. The code's ticket and URL are stored on the building, so
a second run prints the same code again: an account has only 100,000 permanent codes, and a
poster already on a wall must keep working. Each poster shows the code, the community and the
building, and one line of instruction in large type, as PNG (300 dpi) or PDF.

Without WeChat credentials the codes come from the built-in fake WeChat API: the posters show
the layout but cannot be scanned, so those codes are not stored (a later run with the real
account must not reuse them).

The font: residents read Chinese, and neither the machines nor CI have a CJK system font, so it
comes from PyPI. pylopdf-fonts-zh-cn ships Noto Sans SC (Google and Adobe, SIL Open Font License
1.1, which allows embedding it in documents and bundling it with software) as a data-only
package. Pillow draws the PNG with it; fpdf2 embeds the glyphs a PDF uses, so the PDF prints the
same everywhere and its text stays searchable. reportlab was not used: it cannot embed OpenType
fonts with CFF outlines (all Noto CJK fonts have them), and its built-in STSong-Light is not
embedded, so it renders only where the reader brings its own Chinese font.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pylopdf_fonts_zh_cn
from fpdf import FPDF
from fpdf.enums import TextMode
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from bot.clock import Clock
from bot.config import Config
from bot.db import close_db, ensure_schema, init_db
from bot.services import open_services
from bot.wxclient import WeChatAPIError, WeChatClient, WeChatUnavailable
from handlers.binding import building_scene
from models.places import Building, Community

FORMATS = ("png", "pdf")
FONT_PATH = pylopdf_fonts_zh_cn.sans_path()

# fpdf2 subsets the font through fontTools, which logs every table at INFO
logging.getLogger("fontTools").setLevel(logging.WARNING)

HEADER = "邻里 · 社区服务"
INSTRUCTION = "微信扫一扫 绑定住址 办理社区服务"
NOTE = "扫码关注后，按提示填写姓名、手机号和门牌号即可完成绑定。"
FOOTER = "本二维码长期有效，请勿覆盖或撕毁"

# A4 portrait, in millimetres from the top left corner.
PAGE_W, PAGE_H = 210.0, 297.0
TEXT_W = PAGE_W - 2 * 15.0  # widest a line may be
HEADER_H = 30.0
QR_SIZE, QR_TOP = 125.0, 97.0
PNG_DPI = 300
MM_PER_PT = 25.4 / 72
BOLD = 0.06  # faux bold: outline thickness added to each stroke, as a share of the type size

RED = (190, 22, 34)
INK = (30, 30, 30)
GREY = (110, 110, 110)
WHITE = (255, 255, 255)


class PosterError(Exception):
    """The command cannot do what was asked; the message (zh-CN) says why."""


@dataclass(frozen=True)
class Line:
    """One centred line of text: its baseline and type size in mm."""

    text: str
    baseline: float
    size: float
    color: tuple[int, int, int]
    bold: bool = False


def _ems(text: str) -> float:
    """The width of ``text`` in ems of the poster font."""
    font = ImageFont.truetype(str(FONT_PATH), 1000, layout_engine=ImageFont.Layout.BASIC)
    return font.getlength(text) / 1000


def _fit(text: str, size: float) -> float:
    """``size``, or smaller so that the line fits the page (long building names)."""
    width = _ems(text)
    return min(size, TEXT_W / width) if width else size


def layout(community: str, building: str) -> list[Line]:
    """The lines of a poster, top to bottom; the QR code sits between the building and the instruction."""
    return [
        Line(HEADER, 19.5, 11.0, WHITE, bold=True),
        Line(community, 52.0, _fit(community, 13.0), INK),
        Line(building, 86.0, _fit(building, 28.0), INK, bold=True),
        Line(INSTRUCTION, 243.0, _fit(INSTRUCTION, 13.0), RED, bold=True),
        Line(NOTE, 256.0, _fit(NOTE, 6.0), INK),
        Line(FOOTER, 284.0, _fit(FOOTER, 4.5), GREY),
    ]


def _qr_picture(data: bytes, pixels: int) -> Image.Image:
    """WeChat's picture of the code, scaled up without blurring its modules."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            picture = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise PosterError("微信返回的二维码图片无法读取") from exc
    factor = max(1, math.ceil(pixels / max(picture.size)))
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)


def render_png(qr: bytes, community: str, building: str) -> bytes:
    """An A4 poster at 300 dpi."""
    k = PNG_DPI / 25.4  # pixels per mm
    page = Image.new("RGB", (round(PAGE_W * k), round(PAGE_H * k)), WHITE)
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, page.width, round(HEADER_H * k)), fill=RED)
    for line in layout(community, building):
        font = ImageFont.truetype(str(FONT_PATH), round(line.size * k))
        stroke = round(line.size * k * BOLD / 2) if line.bold else 0  # Pillow strokes outward only
        draw.text((page.width / 2, line.baseline * k), line.text, font=font, fill=line.color, anchor="ms",
                  stroke_width=stroke, stroke_fill=line.color)
    side = round(QR_SIZE * k)
    code = _qr_picture(qr, side).resize((side, side), Image.Resampling.NEAREST)
    page.paste(code, (round((PAGE_W - QR_SIZE) / 2 * k), round(QR_TOP * k)))
    out = io.BytesIO()
    page.save(out, "PNG", dpi=(PNG_DPI, PNG_DPI))
    return out.getvalue()


def render_pdf(qr: bytes, community: str, building: str) -> bytes:
    """An A4 poster as a PDF with the font subset embedded."""

    def pt(mm: float) -> float:
        return mm / MM_PER_PT

    # Points as the document's unit: fpdf2 writes a stroked text's line width unconverted.
    pdf = FPDF(unit="pt", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title(f"{community}{building} 楼栋二维码")
    pdf.set_creator("Linli")
    pdf.add_page()
    pdf.add_font("poster", fname=str(FONT_PATH))
    pdf.set_fill_color(*RED)
    pdf.rect(0, 0, pt(PAGE_W), pt(HEADER_H), style="F")
    for line in layout(community, building):
        pdf.set_font("poster", size=pt(line.size))
        with pdf.local_context(text_color=line.color, draw_color=line.color, line_width=pt(line.size * BOLD),
                               text_mode=TextMode.FILL_STROKE if line.bold else TextMode.FILL):
            pdf.text((pt(PAGE_W) - pdf.get_string_width(line.text)) / 2, pt(line.baseline), line.text)
    code = _qr_picture(qr, round(QR_SIZE / 25.4 * PNG_DPI))
    pdf.image(code, x=pt((PAGE_W - QR_SIZE) / 2), y=pt(QR_TOP), w=pt(QR_SIZE), h=pt(QR_SIZE))
    return bytes(pdf.output())


RENDERERS = {"png": render_png, "pdf": render_pdf}

_UNSAFE = re.compile(r'[\\/:*?"<>|\s\x00-\x1f]+')


def file_name(building: Building, community: str, fmt: str) -> str:
    """``0003-米家社区-3号楼.png``: sorted like the buildings, safe on any file system."""
    parts = [_UNSAFE.sub("_", name).strip("._")[:40] or "_" for name in (community, building.name)]
    return f"{building.id:04d}-{parts[0]}-{parts[1]}.{fmt}"


# ---------------------------------------------------------------------------- codes


async def buildings_of(community: str | None) -> list[Building]:
    """Every building, or those of the communities with that name (several sub-districts may have one)."""
    query = Building.all().prefetch_related("community").order_by("id")
    if community is not None:
        found = await Community.filter(name=community.strip()).values_list("id", flat=True)
        if not found:
            names = await Community.all().order_by("id").values_list("name", flat=True)
            known = "、".join(str(n) for n in names[:20]) or "（还没有录入社区）"
            raise PosterError(f"没有名为“{community}”的社区。已有的社区：{known}")
        query = query.filter(community_id__in=found)
    buildings = await query
    if not buildings and community is not None:
        raise PosterError(f"“{community}”还没有录入楼栋。")
    if not buildings:
        raise PosterError("还没有录入楼栋。可以先运行 linli demo 载入演示数据试一试。")
    return list(buildings)


async def building_code(client: WeChatClient, building: Building, *, keep: bool) -> tuple[str, bool]:
    """The ticket of the building's permanent code, and whether it was created just now.

    With ``keep`` the stored code is reused, or a new one is stored; without it (the fake WeChat
    API) a throwaway code is made and nothing is stored.
    """
    if keep and building.qr_ticket:
        return building.qr_ticket, False
    answer = await client.qrcode(building_scene(building.id))  # no expiry: a permanent code
    ticket, url = str(answer["ticket"]), str(answer.get("url", ""))
    if not keep:
        return ticket, True
    # A run at the same time may have stored one already: keep the first, so that every poster
    # of a building shows the same code.
    if not await Building.filter(id=building.id, qr_ticket="").update(qr_ticket=ticket, qr_url=url):
        await building.refresh_from_db(fields=["qr_ticket", "qr_url"])
        return building.qr_ticket, False
    building.qr_ticket, building.qr_url = ticket, url
    return ticket, True


# ---------------------------------------------------------------------------- the command


async def qr_buildings(config: Config, *, community: str | None, fmt: str, out: Path) -> int:
    """`linli qr buildings`: 0 when every poster was written, 1 when some failed, 2 when refused."""
    if fmt not in RENDERERS:
        raise ValueError(f"format must be one of {FORMATS}")
    await ensure_schema(config.database)
    await init_db(config.database)
    try:
        try:
            buildings = await buildings_of(community)
            folder = await asyncio.to_thread(_folder, out)
        except PosterError as exc:
            print(f"linli: {exc}", file=sys.stderr)
            return 2
        return await _make(config, buildings, fmt, folder)
    finally:
        await close_db()


def _folder(out: Path) -> Path:
    """The output folder, made when missing."""
    if out.exists() and not out.is_dir():
        raise PosterError(f"{out} 已存在，但不是文件夹")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PosterError(f"无法创建文件夹 {out}：{exc.strerror or exc}") from exc
    return out.resolve()


async def _make(config: Config, buildings: list[Building], fmt: str, out: Path) -> int:
    written: list[str] = []
    failed = 0
    async with open_services(config, Clock(), run_sender=False) as services:
        sample = services.fake is not None
        if sample:
            print("（未配置微信 appid/secret：二维码来自内置的模拟微信接口，海报只能用来看版式，不能扫码使用；"
                  "这些二维码没有保存。配置正式公众号后再运行一次，即可生成正式海报。）")
        for building in buildings:
            label = f"{building.community.name} {building.name}"
            try:
                ticket, created = await building_code(services.client, building, keep=not sample)
                picture = await services.client.qrcode_image(ticket)
                data = await asyncio.to_thread(RENDERERS[fmt], picture, building.community.name, building.name)
                name = file_name(building, building.community.name, fmt)
                await asyncio.to_thread((out / name).write_bytes, data)
            except (WeChatAPIError, WeChatUnavailable, PosterError, OSError) as exc:
                failed += 1
                print(f"linli: {label}：海报没有生成（{exc}）", file=sys.stderr)
                continue
            note = "模拟二维码" if sample else ("新建二维码" if created else "沿用已有二维码")
            written.append(f"  {label} → {name}（{note}）")
    if written:
        print(f"已生成 {len(written)} 张楼栋海报（{fmt.upper()}，A4），保存在：{out}")
        print("\n".join(written))
    if sample and written:
        print(f"在终端试试扫码绑定：linli chat，然后输入 /subscribe {building_scene(buildings[0].id)}")
    if failed:
        print(f"linli: {failed} 张海报没有生成，原因见上；再次运行会沿用已经建好的二维码。", file=sys.stderr)
        return 1
    return 0
