"""Pydantic v2 models of the shapes people have LLMs fill, for `schema = "module:Model"` jobs.

``MODELS`` lists every model the tests run; each is a top-level object, so its fields become the
output columns.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Sentiment(StrEnum):
    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


class Priority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3


class ReviewAnalysis(BaseModel):
    sentiment: Sentiment
    score: Annotated[int, Field(ge=1, le=5)]
    summary: Annotated[str, Field(max_length=200)]
    keywords: list[str] = []


class Person(BaseModel):
    name: str
    age: int | None = None
    email: str | None = None
    birthday: date | None = None


class Address(BaseModel):
    street: str
    city: str
    postal_code: str
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class Customer(BaseModel):
    id: int
    name: str
    billing: Address
    shipping: Address | None = None
    tags: list[str] = []


class LineItem(BaseModel):
    description: str
    quantity: Annotated[float, Field(gt=0)]
    unit_price: Annotated[float, Field(ge=0)]


class Invoice(BaseModel):
    number: str
    issued: date
    due: date | None = None
    currency: Literal["EUR", "USD", "GBP"]
    items: list[LineItem]
    total: float
    paid: bool = False


class Entity(BaseModel):
    text: str
    label: Literal["PERSON", "ORG", "LOC", "DATE"]
    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]


class NerResult(BaseModel):
    entities: list[Entity]
    language: str = "en"


class WordStats(BaseModel):
    counts: dict[str, int]
    total_words: int
    longest_word: str | None = None


class Event(BaseModel):
    title: str
    starts_at: datetime
    ends_at: datetime | None = None
    all_day: bool = False
    attendees: list[Person] = []


class Task(BaseModel):
    title: str
    priority: Priority
    done: bool = False
    due: date | None = None


class Project(BaseModel):
    name: str
    tasks: list[Task]
    budget: Annotated[float, Field(ge=0)] | None = None


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float
    breed: str | None = None


class PetOwner(BaseModel):
    owner: str
    pet: Annotated[Cat | Dog, Field(discriminator="pet_type")]


class TreeNode(BaseModel):
    label: str
    value: int | None = None
    children: list[TreeNode] = []


class Comment(BaseModel):
    author: str
    text: str
    posted_at: datetime
    replies: list[Comment] | None = None


class Thread(BaseModel):
    title: str
    comments: list[Comment]


class Classification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Literal["spam", "ham"]
    confidence: Annotated[float, Field(ge=0, le=1)]
    reasons: list[str]


class Product(BaseModel):
    sku: Annotated[str, Field(min_length=3, max_length=20)]
    name: str
    price: Annotated[float, Field(ge=0)]
    attributes: dict[str, str] = {}
    dimensions: tuple[float, float, float] | None = None


class Catalogue(BaseModel):
    products: list[Product]
    page: int = 1


class Measurement(BaseModel):
    sensor: str
    readings: list[float]
    taken_on: date
    unit: Literal["C", "F", "K"] = "C"


class Quiz(BaseModel):
    question: str
    choices: Annotated[list[str], Field(min_length=4, max_length=4)]
    answer_index: Annotated[int, Field(ge=0, le=3)]
    difficulty: Literal["easy", "medium", "hard"] | None = None


class Meeting(BaseModel):
    date: date
    attendees: list[str]
    action_items: list[Task]
    notes: str | None = None


class JobPosting(BaseModel):
    title: str
    remote: bool
    salary_min: int | None = None
    salary_max: int | None = None
    skills: list[str]
    seniority: Literal["junior", "mid", "senior", "lead"]


class Scores(BaseModel):
    by_category: dict[str, float]
    flags: dict[str, bool] = {}
    overall: float


class Recipe(BaseModel):
    title: str
    servings: Annotated[int, Field(ge=1)]
    ingredients: list[str]
    steps: list[str]
    vegetarian: bool = False
    prep_minutes: int | None = None


class Payment(BaseModel):
    method: Literal["card"]
    last4: Annotated[str, Field(pattern=r"^[0-9]{4}$")]


class Transfer(BaseModel):
    method: Literal["transfer"]
    iban: str


class Order(BaseModel):
    order_id: str
    placed_at: datetime
    payment: Annotated[Payment | Transfer, Field(discriminator="method")]
    lines: list[LineItem]


MODELS: tuple[type[BaseModel], ...] = (
    ReviewAnalysis, Person, Customer, Invoice, NerResult, WordStats, Event, Project, PetOwner,
    TreeNode, Thread, Classification, Catalogue, Measurement, Quiz, Meeting, JobPosting, Scores,
    Recipe, Order,
)  # fmt: skip
