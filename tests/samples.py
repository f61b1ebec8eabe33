"""One valid message of every kind, as the devices and the aggregator would send them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from lanewatch import contract as c

SITE = "sanfang-qixiang"
NOW = datetime(2026, 11, 29, 3, 0, 5, 250000, tzinfo=timezone.utc)
BOOT = uuid.UUID(int=0xA11CE).hex


def samples() -> dict[str, c.Message]:
    notice = c.DiversionNotice(
        site=SITE,
        id=uuid.UUID(int=42).hex,
        kind="level_change",
        zone="nanhou",
        level="red",
        previous_level="yellow",
        occupancy=5612,
        capacity=5500,
        trend="rising",
        time=NOW,
        reason="occupancy 102% of capacity",
        actions=c.Actions(meter_inbound=["nanhou-south"], close_inbound=["nanhou-north"], divert_to=["alleys-south"]),
        text=c.NoticeText(
            zh="南后街已满，请暂停北口进入，引导游客前往安民巷、宫巷。",
            en="Nanhou Street is full: stop entry at the north gate, send visitors to Anmin and Gong Alleys.",
        ),
        to=["officer-wu", "staff-nanhou-north", "sign-nanhou-north"],
    )
    return {
        "count": c.CountWindow(
            site=SITE,
            device="cam-yijin-west",
            line="gate",
            boot_id=BOOT,
            seq=17,
            window_start=NOW - timedelta(seconds=5),
            window_end=NOW,
            in_=12,
            out=3,
            total_in=48211,
            total_out=47950,
            in_view=9,
            model="ssd_mobilenet_v1_coco_quant",
            agent_version="0.1.0",
        ),
        "heartbeat": c.Heartbeat(
            site=SITE,
            device="cam-yijin-west",
            boot_id=BOOT,
            time=NOW,
            uptime_s=86400.5,
            fps=14.8,
            inference_ms=31.2,
            dropped_frames=12,
            cpu_temp_c=61.5,
            load1=1.2,
            outbox_depth=0,
            outbox_dropped=0,
            camera="ok",
            sign="ok",
            clock_synced=True,
        ),
        "availability": c.Availability(site=SITE, device="cam-yijin-west", state="online", boot_id=BOOT),
        "level": c.LevelState(
            site=SITE,
            zone="nanhou",
            level="red",
            occupancy=5612,
            capacity=5500,
            density=0.51,
            coverage=1.0,
            since=NOW - timedelta(minutes=3),
            time=NOW,
            reason="occupancy 102% of capacity",
        ),
        "zone_notice": notice,
        "entrance_notice": notice,
        "fault": c.DeviceFault(
            site=SITE,
            device="cam-ta-east",
            entrance="ta-east",
            zones=["sfqx", "east", "alleys-north"],
            problem="offline",
            since=NOW - timedelta(minutes=2),
            time=NOW,
            text=c.NoticeText(
                zh="塔巷东口计数设备离线，请检修。", en="The counter at Ta Alley east gate is offline: please check it."
            ),
            to=["tech-team"],
        ),
        "status": c.AggregatorStatus(
            site=SITE,
            instance="aggregator-1",
            time=NOW,
            started=NOW - timedelta(hours=2),
            processed=148_200,
            stored=148_150,
            rejected=3,
            deduplicated=47,
            spooled=0,
            lag_s=0.35,
            database="ok",
        ),
        "deadletter": c.DeadLetter(
            site=SITE,
            time=NOW,
            instance="aggregator-1",
            topic="lanewatch/v1/sanfang-qixiang/devices/cam-unknown/heartbeat",
            reason="unknown device 'cam-unknown': not in the site inventory",
            payload_b64="eyJ2IjogMX0=",
            payload_bytes=8,
        ),
        "headcount": c.Headcount(
            site=SITE, zone="wenru", person="officer-huang", count=480, time=NOW, note="counted from the arch"
        ),
        "reach": c.ReachState(
            site=SITE,
            person="officer-wu",
            time=NOW,
            state="unreachable",
            since=NOW - timedelta(minutes=3),
            pending=2,
            delivered=14,
            last_notice=uuid.UUID(int=42).hex,
            error="sms: HTTP 503 from the gateway",
        ),
        "forwarder": c.ForwarderStatus(
            site=SITE,
            instance="forwarder",
            state="online",
            time=NOW,
            pending=2,
            failing=["sms"],
            unreachable=["officer-wu"],
        ),
    }
