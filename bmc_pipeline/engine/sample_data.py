"""A realistic, deterministic data set shaped like the BMC quoting chatbot's.

Conversations in Spanish about insulated panels and roofing, with ``messages`` arrays; quotes with
products, quantities and prices; sessions, context and analytics events; and the chatbot's files.
The same ``seed`` always gives the same documents (ObjectIds included), so tests can assert exact
results. Only types FerretDB stores are used (no Decimal128, no nested arrays, no NaN).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bson import ObjectId

BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)

PRODUCTS = [
    ("ISODEC-EPS-100", "Panel Isodec EPS 100 mm", "m2", 41.5),
    ("ISODEC-PIR-50", "Panel Isodec PIR 50 mm", "m2", 38.9),
    ("ISOROOF-3G-30", "Panel Isoroof 3G 30 mm", "m2", 33.2),
    ("ISOPANEL-EPS-150", "Isopanel EPS 150 mm para fachada", "m2", 52.0),
    ("GOTERO-FRONTAL", "Gotero frontal prepintado", "ml", 7.8),
    ("CUMBRERA-STD", "Cumbrera estándar", "ml", 11.4),
    ("TORNILLO-AUTO-12", 'Tornillo autoperforante 12x4"', "unidad", 0.35),
    ("SELLADOR-PU", "Sellador poliuretano 600 ml", "unidad", 9.9),
]
NAMES = [
    "Martín Pereira",
    "Lucía Fernández",
    "Diego Rodríguez",
    "Valentina Silva",
    "Santiago López",
    "Camila González",
    "Federico Martínez",
    "Sofía Sosa",
    "Joaquín Núñez",
    "Florencia Castro",
]
CITIES = ["Montevideo", "Canelones", "Maldonado", "Salto", "Paysandú", "Rivera", "Colonia"]
USER_LINES = [
    "Hola, quisiera cotizar paneles para un techo de {area} m2 en {city}.",
    "¿Qué espesor me recomiendan para un galpón sin calefacción?",
    "Necesito también las cumbreras y los goteros, son {length} metros lineales.",
    "¿Hacen envíos a {city}? ¿Cuánto demora la entrega?",
    "Perfecto, ¿me pueden pasar el total con IVA incluido?",
    "¿Tienen stock del panel de 100 mm o hay que esperar?",
    "Gracias, lo consulto con mi socio y les escribo.",
]
BOT_LINES = [
    "¡Hola {name}! Con gusto te ayudo. ¿La estructura es de madera o metálica?",
    "Para un galpón sin calefacción recomendamos Isodec EPS de 100 mm: buen aislamiento a buen precio.",
    "Te preparé la cotización {quote}: {area} m2 de panel más accesorios. ¿Querés que la envíe por correo?",
    "Sí, hacemos envíos a todo el país. A {city} la entrega demora entre 3 y 5 días hábiles.",
    "El total con IVA es de USD {total}. La cotización es válida por 15 días.",
    "Tenemos stock disponible; podés retirar en planta o coordinamos el flete.",
]
STATUSES = ["open", "quoted", "closed", "follow_up"]
EVENTS = [
    "conversation_started",
    "quote_generated",
    "quote_sent",
    "handoff_to_human",
    "session_closed",
]


def _oid(rng: random.Random) -> ObjectId:
    return ObjectId(rng.getrandbits(96).to_bytes(12, "big"))


def _ms(dt: datetime) -> datetime:
    """BSON dates have millisecond precision; generate them that way so round trips are exact."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _phone(rng: random.Random) -> str:
    return f"+598 9{rng.randint(1, 9)} {rng.randint(100, 999)} {rng.randint(100, 999)}"


def generate(conversations: int, seed: int = 42) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (collection, document) pairs; streaming, so 100,000 conversations need no memory."""
    rng = random.Random(seed)
    for i in range(conversations):
        name = rng.choice(NAMES)
        city = rng.choice(CITIES)
        phone = _phone(rng)
        session_id = f"sess-{seed:04d}-{i:07d}"
        created = _ms(
            BASE_TIME - timedelta(days=rng.uniform(0, 42), seconds=rng.randint(0, 86_399))
        )
        area = rng.randint(40, 900)
        length = rng.randint(8, 120)
        quote_no = f"COT-2026-{seed % 100:02d}{i:06d}"
        items: list[dict[str, Any]] = []
        for sku, desc, unit, price in rng.sample(PRODUCTS, rng.randint(2, 5)):
            qty = area if unit == "m2" else (length if unit == "ml" else rng.randint(50, 2000))
            items.append(
                {
                    "sku": sku,
                    "product": desc,
                    "unit": unit,
                    "quantity": qty,
                    "unit_price": price,
                    "subtotal": round(qty * price, 2),
                }
            )
        total = round(sum(it["subtotal"] for it in items) * 1.22, 2)
        fmt = {
            "area": area,
            "city": city,
            "length": length,
            "name": name.split()[0],
            "quote": quote_no,
            "total": f"{total:,.2f}",
        }
        messages = []
        t = created
        for turn in range(rng.randint(3, 6)):
            t = _ms(t + timedelta(seconds=rng.randint(20, 600)))
            messages.append(
                {
                    "role": "user",
                    "content": rng.choice(USER_LINES).format(**fmt),
                    "timestamp": t,
                    "message_id": f"{session_id}-{2 * turn}",
                }
            )
            t = _ms(t + timedelta(seconds=rng.randint(2, 30)))
            messages.append(
                {
                    "role": "assistant",
                    "content": rng.choice(BOT_LINES).format(**fmt),
                    "timestamp": t,
                    "message_id": f"{session_id}-{2 * turn + 1}",
                }
            )
        status = rng.choice(STATUSES)
        quoted = status in ("quoted", "closed") or rng.random() < 0.2
        yield (
            "conversations",
            {
                "_id": _oid(rng),
                "session_id": session_id,
                "channel": rng.choice(["whatsapp", "whatsapp", "web"]),
                "user": {"name": name, "phone": phone, "city": city},
                "status": status,
                "messages": messages,
                "message_count": len(messages),
                "quote_id": quote_no if quoted else None,
                "tags": rng.sample(
                    ["techo", "fachada", "galpon", "vivienda", "urgente", "mayorista"], 2
                ),
                "created_at": created,
                "updated_at": t,
            },
        )
        yield (
            "sessions",
            {
                "_id": _oid(rng),
                "session_id": session_id,
                "user_phone": phone,
                "state": "closed" if status == "closed" else "active",
                "started_at": created,
                "last_activity": t,
                "created_at": created,
                "updated_at": t,
            },
        )
        yield (
            "context",
            {
                "_id": _oid(rng),
                "session_id": session_id,
                "variables": {
                    "city": city,
                    "area_m2": area,
                    "structure": rng.choice(["madera", "metálica"]),
                    "preferred_product": items[0]["sku"],
                },
                "updated_at": t,
            },
        )
        if quoted:
            yield (
                "quotes",
                {
                    "_id": _oid(rng),
                    "quote_id": quote_no,
                    "session_id": session_id,
                    "customer": {
                        "name": name,
                        "phone": phone,
                        "email": f"{name.split()[0].lower()}{i}@example.com.uy",
                    },
                    "items": items,
                    "currency": "USD",
                    "tax_rate": 0.22,
                    "total": total,
                    "status": "sent" if status == "quoted" else "accepted",
                    "valid_until": _ms(created + timedelta(days=15)),
                    "created_at": messages[-1]["timestamp"],
                    "updated_at": t,
                },
            )
        for ev in rng.sample(EVENTS, 2):
            yield (
                "analytics",
                {
                    "_id": _oid(rng),
                    "event": ev,
                    "session_id": session_id,
                    "timestamp": _ms(created + timedelta(seconds=rng.randint(0, 3600))),
                    "properties": {"channel": "whatsapp", "city": city, "messages": len(messages)},
                },
            )


def seed_database(
    db: Any, conversations: int, seed: int = 42, *, drop: bool = True, batch: int = 2000
) -> dict[str, int]:
    """Write the data set into ``db`` (dropping the five collections first); returns counts."""
    names = ["conversations", "quotes", "sessions", "context", "analytics"]
    if drop:
        for n in names:
            db[n].drop()
    buffers: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    counts = dict.fromkeys(names, 0)
    for coll, doc in generate(conversations, seed):
        buf = buffers[coll]
        buf.append(doc)
        if len(buf) >= batch:
            db[coll].insert_many(buf, ordered=False)
            counts[coll] += len(buf)
            buf.clear()
    for coll, buf in buffers.items():
        if buf:
            db[coll].insert_many(buf, ordered=False)
            counts[coll] += len(buf)
    for n in names:
        db[n].create_index("session_id")
    db["conversations"].create_index("updated_at")
    return counts


def write_files(root: Path, seed: int = 42) -> list[Path]:
    """The chatbot's files: knowledge base, configuration, ``.env`` and stray backups/exports."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "exportaciones").mkdir(exist_ok=True)
    kb = {
        "version": "2026.11",
        "productos": [
            {"sku": s, "descripcion": d, "unidad": u, "precio_usd": p} for s, d, u, p in PRODUCTS
        ],
        "preguntas_frecuentes": [
            {
                "pregunta": "¿Hacen envíos al interior?",
                "respuesta": "Sí, a todo Uruguay en 3 a 5 días hábiles.",
            },
            {
                "pregunta": "¿Qué garantía tienen los paneles?",
                "respuesta": "10 años contra defectos de fabricación.",
            },
        ],
    }
    sample = [doc for c, doc in generate(6, seed + 1) if c == "conversations"]
    as_json = json.loads(json.dumps(sample, default=str))
    files = {
        "conocimiento_consolidado.json": json.dumps(kb, ensure_ascii=False, indent=2),
        "base_conocimiento_exportada.json": json.dumps(
            {"exportado": BASE_TIME.isoformat(), "kb": kb}, ensure_ascii=False
        ),
        "config.py": 'MODEL = "gpt-4o-mini"\nMAX_TOKENS = 800\nIDIOMA = "es-UY"\n',
        ".env": f"OPENAI_API_KEY=sk-demo-{rng.getrandbits(64):016x}\nWHATSAPP_TOKEN=demo-{rng.getrandbits(64):016x}\n",
        "kb_populated_2026-10-01.json": json.dumps(kb, ensure_ascii=False),
        "kb_populated_v2.json": json.dumps({"data": {"conocimiento": kb}}, ensure_ascii=False),
        "backup_conversations_2026-10-15.json": json.dumps(as_json[:3], ensure_ascii=False),
        "exportaciones/export_conversations.json": json.dumps(
            {"data": {"conversations": as_json[3:]}}, ensure_ascii=False
        ),
        "exportaciones/backup_2026-10-20.json": json.dumps(as_json[:2], ensure_ascii=False),
    }
    out = []
    for rel, text in files.items():
        p = root / rel
        p.write_text(text, encoding="utf-8")
        out.append(p)
    (root / ".env").chmod(0o600)
    return out
