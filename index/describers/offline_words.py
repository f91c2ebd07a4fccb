"""Chinese sentences from what the offline models found: who and what is in the photo (counts
from detector boxes), what people do with the things they touch, and the scene.

Kept apart from the models so the wording can be read and tested on its own. Everything said
comes from a box, a tag or a pixel statistic; nothing is guessed beyond that (no gender, no age:
COCO has only "person").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from index.describers.detect import CocoClass, Detection, overlap_share, read_coco_classes
from index.describers.faces import WHO_WORDS

MIN_BOX_AREA = 0.004  # smaller boxes are far-away specks: not counted, not named
MAX_SUBJECTS = 3
MAX_DRESSED = 2  # the clothes of this many people (the largest boxes) are told
TOUCH_SHARE = 0.3  # an object counts as held/ridden when this much of it lies in a person's box
_NUMBERS = "零一两三四五六七八九十"
_CROWD = 5  # from this many people on: 一群人
PERSON_NOUNS = WHO_WORDS | {"人"}  # the nouns a person is told by (`Detection.who`, or 人)

# (object class, what a person in contact with it does). Order = which activity is told first.
_PERSON_ACTIVITIES = (
    ("bicycle", "骑自行车"),
    ("motorcycle", "骑摩托车"),
    ("horse", "骑马"),
    ("skis", "滑雪"),
    ("snowboard", "滑雪"),
    ("surfboard", "冲浪"),
    ("skateboard", "玩滑板"),
    ("kite", "放风筝"),
    ("frisbee", "玩飞盘"),
    ("sports ball", "玩球"),
    ("tennis racket", "打网球"),
    ("baseball bat", "打棒球"),
    ("baseball glove", "打棒球"),
    ("boat", "坐在船上"),
    ("umbrella", "打着伞"),
    ("bench", "坐在长椅上"),
    ("couch", "坐在沙发上"),
    ("chair", "坐在椅子上"),
    ("cell phone", "拿着手机"),
    ("laptop", "用笔记本电脑"),
    ("book", "看书"),
    ("dog", "和狗在一起"),
)
_DOG_ACTIVITIES = (("frisbee", "叼着飞盘"), ("sports ball", "在玩球"))

# ImageNet classes that say where a photo was taken (class index -> scene word).
SCENE_CLASSES = {
    450: "雪地",  # bobsled
    472: "水上",  # canoe
    537: "雪地",  # dogsled
    693: "水上",  # paddle
    795: "滑雪场",  # ski
    802: "雪地",  # snowmobile
    814: "水上",  # speedboat
    970: "雪山",  # alp
    972: "悬崖",  # cliff
    973: "珊瑚礁",  # coral reef
    974: "间歇泉",  # geyser
    975: "湖边",  # lakeside
    976: "海岬",  # promontory
    977: "沙滩",  # sandbar
    978: "海边",  # seashore
    979: "山谷",  # valley
    980: "火山",  # volcano
}
SCENE_MIN_PROBABILITY = 0.08
# ImageNet classes that say what people are doing or wearing (class index -> phrase); told on
# the 人物动作 line when the class is among the five likeliest at SCENE_MIN_PROBABILITY.
ACTIVITY_CLASSES = {
    433: "游泳",  # bathing cap
    445: "游泳",  # bikini
    638: "游泳",  # maillot
    842: "游泳",  # swimming trunks
    801: "潜水",  # snorkel
    983: "潜水",  # scuba diver
    472: "划船",  # canoe
    576: "划船",  # gondola
    625: "划船",  # lifeboat
    693: "划船",  # paddle
    444: "骑自行车",  # bicycle-built-for-two
    671: "骑自行车",  # mountain bike
    670: "骑摩托车",  # motor scooter
    573: "赛车",  # go-kart
    751: "赛车",  # racer
    430: "打篮球",  # basketball
    560: "打橄榄球",  # football helmet
    768: "打橄榄球",  # rugby ball
    805: "踢足球",  # soccer ball
    890: "打排球",  # volleyball
    852: "打网球",  # tennis ball
    429: "打棒球",  # baseball
    981: "打棒球",  # ballplayer
    574: "打高尔夫球",  # golf ball
    795: "滑雪",  # ski
    796: "滑雪",  # ski mask
    843: "荡秋千",  # swing
    402: "弹吉他",  # acoustic guitar
    546: "弹吉他",  # electric guitar
    541: "打鼓",  # drum
    819: "在舞台上表演",  # stage
    701: "跳伞",  # parachute
    416: "做体操",  # balance beam
    602: "做体操",  # horizontal bar
    702: "做体操",  # parallel bars
    836: "戴着墨镜",  # sunglass
    837: "戴着墨镜",  # sunglasses
    515: "戴着帽子",  # cowboy hat
    808: "戴着帽子",  # sombrero
    518: "戴着头盔",  # crash helmet
}
# How a scene word reads after "在" in the subject sentence ("一只狗在草地上").
_LOCATIONS = {
    "草地": "在草地上",
    "雪地": "在雪地里",
    "雪山": "在雪山上",
    "滑雪场": "在滑雪场",
    "海边": "在海边",
    "沙滩": "在沙滩上",
    "湖边": "在湖边",
    "水上": "在水上",
    "悬崖": "在悬崖边",
    "山谷": "在山谷里",
}


@dataclass(frozen=True)
class SceneCues:
    """Colour statistics of a photo, as shares of pixels in its top third / bottom half."""

    blue_sky: float
    green_ground: float
    white_ground: float

    def words(self) -> list[str]:
        """Scene words whose colour evidence is strong.

        Thresholds checked on 1,000 eval photos against their captions: snow at 0.5 is right
        64% of the time, grass at 0.45 about 73%; blue below (water) was right only half the
        time and is not used (ImageNet's seashore/lakeside classes say it better).
        """
        found = []
        if self.white_ground >= 0.5:
            found.append("雪地")
        if self.green_ground >= 0.45:
            found.append("草地")
        if self.blue_sky >= 0.5:
            found.append("蓝天")
        return found


def scene_cues(image: Image.Image) -> SceneCues:
    """Blue sky above, grass or snow below, from a 64x64 HSV copy of the photo."""
    hsv = np.asarray(image.convert("RGB").resize((64, 64)).convert("HSV"), dtype=np.float32)
    hue, sat, val = hsv[..., 0] * (360 / 255), hsv[..., 1] / 255, hsv[..., 2] / 255
    top, bottom = slice(0, 21), slice(32, 64)
    blue = (hue >= 190) & (hue <= 250) & (sat >= 0.25) & (val >= 0.45)
    green = (hue >= 65) & (hue <= 165) & (sat >= 0.25) & (val >= 0.2)
    white = (sat <= 0.12) & (val >= 0.78)
    return SceneCues(
        blue_sky=float(blue[top].mean()),
        green_ground=float(green[bottom].mean()),
        white_ground=float(white[bottom].mean()),
    )


_LOOKS_LIKE_DOG = frozenset({"cat", "horse", "sheep", "cow", "bear", "teddy bear"})
DOG_PROBABILITY = 0.4  # ImageNet's 118 dog breeds together: it is a dog


def reconcile_animals(detections: list[Detection], dog_probability: float) -> list[Detection]:
    """Trust ImageNet on dogs: its 118 breeds are what it knows best. When it is sure of a dog
    and the detector saw none, the animals the detector did see are taken for dogs, and with
    no animal box at all the whole photo counts as one dog."""
    if dog_probability < DOG_PROBABILITY or any(d.label == "dog" for d in detections):
        return detections
    if not any(d.label in _LOOKS_LIKE_DOG for d in detections):
        return [*detections, Detection("dog", dog_probability, (0.0, 0.0, 1.0, 1.0))]
    return [replace(d, label="dog") if d.label in _LOOKS_LIKE_DOG else d for d in detections]


def count_words(count: int, measure: str, noun: str) -> str:
    """ "一个人", "两只狗", "一群人" (five and more people), "十多只鸟"."""
    if noun in PERSON_NOUNS and count >= _CROWD:
        return f"一群{noun}"
    if count > 10:
        return f"十多{measure}{noun}"
    return f"{_NUMBERS[count]}{measure}{noun}"


class SceneWriter:
    """Turns detections, ImageNet tags and colour cues into labelled description lines."""

    def __init__(self, classes: list[CocoClass] | None = None) -> None:
        self._classes = {c.english: c for c in classes or read_coco_classes()}

    def lines(
        self,
        detections: list[Detection],
        image: Image.Image,
        scene_tags: list[str],
        activity_tags: Sequence[str] = (),
    ) -> list[str]:
        """The labelled 主体 / 人物动作 / 场景 lines (only those with something to say).

        `scene_tags` / `activity_tags`: words from likely ImageNet classes (SCENE_CLASSES,
        ACTIVITY_CLASSES)."""
        lines = []
        scene = list(dict.fromkeys([*scene_tags, *scene_cues(image).words()]))
        where = next((_LOCATIONS[word] for word in scene if word in _LOCATIONS), "")
        if subject := self.subject(detections, image):
            lines.append("主体：" + subject + where)
        doing = self.activities(detections, image)
        doing += [word for word in dict.fromkeys(activity_tags) if word not in "，".join(doing)]
        if doing:
            lines.append("人物动作：" + "，".join(doing))
        if scene:
            lines.append("场景：" + "、".join(scene))
        return lines

    def subject(self, detections: list[Detection], image: Image.Image) -> str:
        """Who and what the photo shows, by count: "一个男人和一个小女孩和一只黑狗"."""
        visible = _visible(detections)
        people = [d for d in visible if d.label == "person"]
        counts = Counter(d.label for d in visible if d.label != "person")
        ranked = sorted(counts, key=lambda label: -counts[label])
        parts = people_words(people)
        parts += [self._counted(label, counts[label], detections, image) for label in ranked]
        return "和".join(parts[:MAX_SUBJECTS])

    def _counted(
        self, label: str, count: int, detections: list[Detection], image: Image.Image
    ) -> str:
        cls = self._classes[label]
        noun = cls.chinese
        if label in ("dog", "cat", "horse"):
            colours = {colour_of(image, d.box) for d in detections if d.label == label}
            if len(colours) == 1:
                noun = colours.pop() + noun
        return count_words(count, cls.measure, noun)

    def activities(self, detections: list[Detection], image: Image.Image) -> list[str]:
        """What people (and dogs) do with what they touch: "三个人骑自行车"."""
        visible = _visible(detections)
        people = [d for d in visible if d.label == "person"]
        told: dict[str, str] = {}  # verb -> sentence: one sentence per verb (the two 滑雪 classes)
        for label, verb in _PERSON_ACTIVITIES:
            things = [d for d in visible if d.label == label]
            doers = [
                p for p in people if any(overlap_share(t.box, p.box) >= TOUCH_SHARE for t in things)
            ]
            if doers and verb not in told:
                told[verb] = count_words(len(doers), "个", shared_noun(doers)) + verb
        dogs = [d for d in visible if d.label == "dog"]
        for label, verb in _DOG_ACTIVITIES:
            things = [d for d in visible if d.label == label]
            if any(overlap_share(t.box, g.box) >= TOUCH_SHARE for t in things for g in dogs):
                told.setdefault(verb, f"狗{verb}")
        return [*told.values(), *_clothes(people, image)]


def person_noun(person: Detection) -> str:
    """ "男人", "小女孩" when the person's face was read, else "人"."""
    return person.who or "人"


def shared_noun(people: Sequence[Detection]) -> str:
    """The one noun all of `people` share ("男孩"), else "人"."""
    nouns = {person_noun(p) for p in people}
    return nouns.pop() if len(nouns) == 1 else "人"


def people_words(people: Sequence[Detection]) -> list[str]:
    """The people by kind and count: ["一个男人", "两个小女孩"]; those whose face was not read
    are "人" ("一个女人和另外两个人"); five and more are "一群人"."""
    if not people:
        return []
    if len(people) >= _CROWD:
        return [count_words(len(people), "个", shared_noun(people))]
    counts = Counter(person_noun(p) for p in people)
    ranked = sorted(counts, key=lambda noun: (noun == "人", -counts[noun]))
    words = [count_words(counts[noun], "个", noun) for noun in ranked]
    if len(words) > 1 and ranked[-1] == "人":  # "一个男人和另一个人", "…和另外两个人"
        others = counts["人"]
        words[-1] = "另一个人" if others == 1 else "另外" + count_words(others, "个", "人")
    return words


def _clothes(people: list[Detection], image: Image.Image) -> list[str]:
    """ "穿红色衣服的女人" for the largest people whose top has a clear colour (人 when the
    face was not read)."""
    dressed: dict[str, str] = {}  # colour -> the noun of its largest wearer
    for person in sorted(people, key=lambda d: -d.area)[:MAX_DRESSED]:
        dressed.setdefault(clothing_colour(image, person.box), person_noun(person))
    return [f"穿{colour}色衣服的{noun}" for colour, noun in dressed.items() if colour]


def _visible(detections: list[Detection]) -> list[Detection]:
    return [d for d in detections if d.area >= MIN_BOX_AREA]


def _median_hsv(
    image: Image.Image, box: tuple[float, float, float, float], part: tuple[float, ...]
) -> tuple[float, float, float]:
    """Median hue (degrees), saturation and value (0..1) of a part of a box; `part` is
    (left, top, right, bottom) as fractions of the box."""
    width, height = image.size
    x1, y1, x2, y2 = box
    left, top = x1 + (x2 - x1) * part[0], y1 + (y2 - y1) * part[1]
    right, bottom = x1 + (x2 - x1) * part[2], y1 + (y2 - y1) * part[3]
    pixels = (int(left * width), int(top * height), int(right * width), int(bottom * height))
    crop = image.crop((*pixels[:2], max(pixels[2], pixels[0] + 1), max(pixels[3], pixels[1] + 1)))
    hsv: Any = np.asarray(crop.convert("RGB").resize((16, 16)).convert("HSV"), dtype=np.float32)
    return (
        float(np.median(hsv[..., 0])) * 360 / 255,
        float(np.median(hsv[..., 1])) / 255,
        float(np.median(hsv[..., 2])) / 255,
    )


def colour_of(image: Image.Image, box: tuple[float, float, float, float]) -> str:
    """ "黑", "白", "棕色的" or "" for the middle of a box (an animal's coat)."""
    hue, sat, val = _median_hsv(image, box, (0.25, 0.25, 0.75, 0.75))
    if val < 0.22:
        return "黑"
    if val > 0.72 and sat < 0.18:
        return "白"
    if 15 <= hue <= 45 and sat >= 0.3 and 0.25 <= val <= 0.8:
        return "棕色的"
    return ""


_HUES = ((15, "红"), (40, "橙"), (70, "黄"), (165, "绿"), (255, "蓝"), (290, "紫"), (340, "粉"))


def clothing_colour(image: Image.Image, box: tuple[float, float, float, float]) -> str:
    """The colour of a person's top (the middle of the upper body), or "" when unsure."""
    hue, sat, val = _median_hsv(image, box, (0.3, 0.2, 0.7, 0.5))
    if val < 0.2:
        return "黑"
    if sat < 0.15:
        return "白" if val > 0.75 else ""
    if sat < 0.35 or val < 0.3:
        return ""
    return next((name for limit, name in _HUES if hue < limit), "红")
