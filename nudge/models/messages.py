"""Message definitions (templates) and rendered messages: text, card or image."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nudge.templating import check_template, render


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Button(_Strict):
    label: Annotated[str, Field(min_length=1, max_length=80)]
    action: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
            description="The button action to run when pressed (see `button_actions`).",
        ),
    ]
    url: str | None = Field(
        default=None, description="Filled in on send: the signed address that records the press."
    )


class Card(_Strict):
    title: Annotated[str, Field(min_length=1, max_length=500)]
    text: str = ""
    image_url: str | None = None
    buttons: Annotated[list[Button], Field(max_length=10)] = []


class Image(_Strict):
    url: Annotated[str, Field(min_length=1)]
    caption: str = ""


class TextMessage(_Strict):
    kind: Literal["text"] = "text"
    text: Annotated[str, Field(min_length=1, max_length=10_000)]

    @field_validator("text")
    @classmethod
    def _template_compiles(cls, text: str) -> str:
        return check_template(text)


class CardMessage(_Strict):
    kind: Literal["card"] = "card"
    card: Card

    @field_validator("card")
    @classmethod
    def _templates_compile(cls, card: Card) -> Card:
        for source in (
            card.title,
            card.text,
            card.image_url or "",
            *(b.label for b in card.buttons),
        ):
            check_template(source)
        return card


class ImageMessage(_Strict):
    kind: Literal["image"] = "image"
    image: Image

    @field_validator("image")
    @classmethod
    def _templates_compile(cls, image: Image) -> Image:
        check_template(image.url)
        check_template(image.caption)
        return image


AnyMessage = TextMessage | CardMessage | ImageMessage
MessageTemplate = Annotated[AnyMessage, Field(discriminator="kind")]


class _StoredMessage(BaseModel):
    message: MessageTemplate


def parse_message(data: Any) -> AnyMessage:
    """A stored message definition (JSON) back as its model."""
    return _StoredMessage(message=data).message


def render_message(
    template: TextMessage | CardMessage | ImageMessage, context: dict[str, Any]
) -> TextMessage | CardMessage | ImageMessage:
    """The same message with every template rendered against ``context``."""
    if isinstance(template, TextMessage):
        return TextMessage(text=render(template.text, context) or " ")
    if isinstance(template, CardMessage):
        card = template.card
        return CardMessage(
            card=Card(
                title=render(card.title, context) or " ",
                text=render(card.text, context),
                image_url=render(card.image_url, context) if card.image_url else None,
                buttons=[
                    Button(label=render(b.label, context) or b.action, action=b.action, url=b.url)
                    for b in card.buttons
                ],
            )
        )
    return ImageMessage(
        image=Image(
            url=render(template.image.url, context), caption=render(template.image.caption, context)
        )
    )


def plain_text(message: TextMessage | CardMessage | ImageMessage) -> str:
    """How a message reads where only text travels (history, SMS, email text part)."""
    if isinstance(message, TextMessage):
        return message.text
    if isinstance(message, CardMessage):
        lines = [message.card.title]
        if message.card.text:
            lines.append(message.card.text)
        if message.card.image_url:
            lines.append(message.card.image_url)
        lines += [f"{b.label}: {b.url}" if b.url else b.label for b in message.card.buttons]
        return "\n".join(lines)
    caption = message.image.caption
    return f"{caption}\n{message.image.url}" if caption else message.image.url
